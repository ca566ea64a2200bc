"""benchmarks/accuracy/run.py: finished jobs are archived, restored and tabled from the archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffpool.training.results import FairResult, RunResult
from helpers import ROOT, load_script

DRIVER = ROOT / "benchmarks" / "accuracy" / "run.py"


@pytest.fixture(scope="module")
def driver():
    return load_script(DRIVER, "accuracy_driver")


def _job(sweep: Path, variant: str, fold: int, curve: list[float], best: int, **extra) -> Path:
    """A finished job of the ENZYMES column."""
    job = sweep / f"data.fold={fold},experiment=paper_enzymes_{variant}"
    job.mkdir(parents=True)
    config = {
        "data": {"name": "ENZYMES", "fold": fold, "root": "/x"},
        "model": {"variant": variant},
    }
    RunResult(
        dataset="ENZYMES",
        fold=fold,
        num_folds=10,
        model=variant,
        epochs=len(curve),
        fair=FairResult(best_epoch=best, val=0.5, test=curve[best]),
        test_curve=curve,
        val_curve=[0.5] * len(curve),
        wall_time_s=60.0,
        config=config,
        **extra,
    ).save(job)
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"not archived")
    return job


def test_jobs_are_archived_restored_and_tabled(driver, tmp_path):
    sweep, archive = tmp_path / "sweep", tmp_path / "archive"
    file = driver.archive_file(archive, "ENZYMES")
    _job(sweep, "diffpool", 0, [0.5, 0.7, 0.6], best=1)
    _job(sweep, "diffpool", 1, [0.4, 0.5, 0.8], best=2)
    _job(sweep, "base", 0, [0.3, 0.4, 0.5], best=2)
    failed = sweep / "data.fold=1,experiment=paper_enzymes_base"
    failed.mkdir()
    (failed / "failed.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
    # a replaced run is history, not a result
    _job(sweep / "data.fold=0,experiment=paper_enzymes_base" / "replaced-1", "base", 0, [1.0], 0)

    assert driver.archive_runs(sweep, file) == 3
    assert driver.archive_runs(sweep, file) == 0  # unchanged jobs are not written again
    assert file.name == "enzymes.jsonl" and len(file.read_text().splitlines()) == 3
    assert list(archive.iterdir()) == [file]  # one file: no checkpoints, no job directories
    # a job that finished in another working directory is added, the others stay
    other = tmp_path / "other"
    _job(other, "det", 0, [0.6], best=0)
    assert driver.archive_runs(other, file) == 1 and len(driver.load_archive(file)) == 4

    # a fresh clone: the finished jobs come back, as results the runs recognise
    fresh = tmp_path / "fresh"
    assert driver.restore_archive(file, fresh) == 4
    back = RunResult.load(fresh / "data.fold=1,experiment=paper_enzymes_diffpool")
    assert back.test_curve == [0.4, 0.5, 0.8] and back.fair.test == 0.8 and back.schema == 2
    assert not list(fresh.rglob("failed.json"))
    assert driver.restore_archive(file, fresh) == 0  # a job directory that holds a result keeps it

    cells = driver.column(file)
    diffpool = cells["diffpool"]
    assert diffpool["folds"] == 2 and diffpool["wall_time_s"] == 120.0
    assert diffpool["fair"] == pytest.approx([0.75, 0.05])
    # paper protocol: the best epoch of the mean curve (epoch 2: 0.6, 0.8)
    assert diffpool["paper"] == pytest.approx([0.70, 0.10]) and diffpool["paper_epoch"] == 2
    assert cells["base"]["folds"] == 1 and cells["det"]["folds"] == 1
    assert driver.column(tmp_path / "nothing.jsonl") == {}


def test_table_has_models_as_rows_and_datasets_as_columns(driver, tmp_path):
    archive = tmp_path / "archive"
    sweep = tmp_path / "sweep"
    for fold, curve in enumerate([[0.5, 0.7], [0.6, 0.8]]):
        _job(sweep, "diffpool", fold, curve, best=1)
    _job(sweep, "base", 0, [0.5, 0.6], best=1, provenance={"commit": "0123456789", "modified": 0})
    driver.archive_runs(sweep, driver.archive_file(archive, "ENZYMES"))
    results = driver.write_report(archive, tmp_path / "accuracy")
    assert list(results["datasets"]) == ["ENZYMES"]
    table = (tmp_path / "accuracy.md").read_text()
    assert "| model | ENZYMES |" in table
    # paper protocol / fair protocol (published), and how many folds where fewer than 10
    assert "| diffpool | 75.0 ± 5.0 / 75.0 ± 5.0 (62.53) [2 folds] |" in table
    assert "| sortpool | not run (57.12) |" in table
    assert "| DiffPool, Errica et al. (fair) | — / 59.5 ± 5.6 |" in table
    assert "code 0123456 ×1, — ×2" in table
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_validation_set_have_no_fair_cell(driver, tmp_path):
    """Jobs run with data.val_ratio=0 have no fair result: the cell says so instead of NaN."""
    file = tmp_path / "enzymes.jsonl"
    runs = [
        RunResult(
            dataset="ENZYMES",
            fold=fold,
            num_folds=10,
            model="diffpool",
            epochs=2,
            fair=FairResult(),
            test_curve=curve,
            val_curve=[float("nan")] * 2,
            wall_time_s=1.0,
            config={"model": {"variant": "diffpool"}, "data": {"fold": fold}},
            path=Path(f"job{fold}"),
        )
        for fold, curve in enumerate([[0.5, 0.7], [0.6, 0.8]])
    ]
    driver.save_archive(runs, file)
    cell = driver.column(file)["diffpool"]
    assert cell["fair"] is None and cell["paper"] == pytest.approx([0.75, 0.05])
    assert driver._cell(cell, 62.53) == "75.0 ± 5.0 / — (62.53) [2 folds]"


def test_a_column_holds_one_setting(driver, tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "diffpool", 0, [0.5], best=0)
    job = _job(sweep / "x", "diffpool", 0, [0.5], best=0)
    results = json.loads((job / "results.json").read_text())
    results["config"]["model"]["ratio"] = 0.5
    (job / "results.json").write_text(json.dumps(results))
    file = tmp_path / "enzymes.jsonl"
    driver.archive_runs(sweep, file)
    with pytest.raises(SystemExit, match="two settings of diffpool"):
        driver.column(file)


def test_sweep_commands_apply_the_columns_setting(driver, tmp_path):
    import argparse

    import yaml

    args = argparse.Namespace(
        models=["base", "diffpool"],
        folds=10,
        data_root="/d",
        trainer="cpu",
        epochs=0,
        jobs=2,
        overrides=[],
    )
    flat, pooling = driver.sweep_commands("DD", args, tmp_path / "dd")
    assert {"experiment=paper", "data=dd", "model=base", "resume=true"} <= set(flat)
    assert "trainer.max_epochs=10" in flat and "hydra.launcher.n_jobs=2" in flat
    # the pooling-only overrides of D&D's setting reach the pooling models only
    assert "model.budget=per_graph" not in flat
    assert "model=diffpool" in pooling and "model.budget=per_graph" in pooling
    (proteins,) = driver.sweep_commands(
        "PROTEINS", argparse.Namespace(**{**vars(args), "models": ["diffpool"]}), tmp_path
    )
    assert "data.node_features=both" in proteins and "trainer.max_epochs=20" in proteins
    # job directories are named by the overrides: resume=true must not rename them, or the
    # finished (and archived) jobs would not be found and skipped
    hydra = yaml.safe_load((driver.ROOT / "conf" / "hydra" / "default.yaml").read_text())
    excluded = hydra["job"]["config"]["override_dirname"]["exclude_keys"]
    assert "resume" in excluded and "data.root" in excluded and "hydra.sweep.dir" in excluded


def test_runs_other_than_the_table_need_their_own_archive(driver, tmp_path):
    with pytest.raises(SystemExit, match="not the table's"):
        driver.main(["--datasets", "ENZYMES", "--epochs", "3"])
    with pytest.raises(SystemExit, match="not the table's"):
        driver.main(["--report-only", "--datasets", "ENZYMES", "--", "model.ratio=0.5"])


def test_committed_table_is_rebuilt_from_the_committed_archives(driver, tmp_path):
    """The committed accuracy.md is what the driver computes from the committed archives."""
    driver.write_report(driver.ARCHIVE, tmp_path / "accuracy")
    committed = (driver.RESULTS / "accuracy.md").read_text()
    rebuilt = (tmp_path / "accuracy.md").read_text()
    strip = [line for line in committed.splitlines() if not line.startswith("Test accuracy")]
    assert strip == [line for line in rebuilt.splitlines() if not line.startswith("Test accuracy")]


#: config keys added since the archived jobs ran, with the value those jobs had
ADDED_SINCE = {
    "data": {"task": None, "metric": None, "edge_features": False, "split": "kfold",
             "split_file": None, "inner": 0},
    "model": {"loss_normalization": "per_graph", "pool_net": "gnn"},
}  # fmt: skip


def test_todays_sweep_configs_are_the_archived_runs(driver):
    """The archived jobs are the runs today's sweep commands configure: every model's data
    config and every pooling model's model config (the paper preset's ratio 0.1 included) are
    the archived ones, up to the keys added since with the archived value
    (:data:`ADDED_SINCE`). (The archived flat models' model configs still carry the
    pooling keys, and ``optimized_metric`` was renamed since: not compared here.)"""
    import argparse

    from hydra import compose, initialize_config_module

    from diffpool.training.run import comparable_config

    compared = 0
    for dataset in driver.SETTINGS:
        file = driver.archive_file(driver.ARCHIVE, dataset)
        if not file.exists():
            continue
        firsts = {}
        for run in driver.load_archive(file):
            firsts.setdefault(run.config["model"]["variant"], run)
        for variant, run in sorted(firsts.items()):
            args = argparse.Namespace(models=[variant], folds=10, data_root="/d",
                                      trainer="cpu", epochs=0, jobs=1, overrides=[])  # fmt: skip
            (command,) = driver.sweep_commands(dataset, args, Path("sweep"))
            skipped = ("-m", "hydra.", "launcher=", "data.fold=range", "resume=")
            overrides = [a for a in command[1:] if not a.startswith(skipped)]
            with initialize_config_module("diffpool.conf", version_base="1.3"):
                cfg = compose("train", overrides=[*overrides, f"data.fold={run.fold}"])
            cfg.output_dir = "x"
            today = comparable_config(cfg)
            archived = {g: {**ADDED_SINCE.get(g, {}), **run.config[g]} for g in ("data", "model")}
            today["data"].pop("root"), archived["data"].pop("root")
            assert today["data"] == archived["data"], (dataset, variant)
            if variant not in driver.FLAT_MODELS:
                assert today["model"] == archived["model"], (dataset, variant)
                assert archived["model"]["ratio"] == 0.1
            compared += 1
    assert compared >= 24  # 4 archived columns x 6 models


def _result(fold: int) -> RunResult:
    return RunResult(
        dataset="MUTAG", fold=fold, num_folds=2, model="diffpool", epochs=2,
        fair=FairResult(best_epoch=1, val=0.5, test=0.75), test_curve=[0.5, 0.75],
        val_curve=[0.25, 0.5], wall_time_s=1.5, config={"data": {"name": "MUTAG"}},
    )  # fmt: skip


@pytest.mark.parametrize("job", ["../escaped", "a/../../escaped", "ABSOLUTE", "link/job"])
def test_restore_archive_writes_no_job_outside_its_root(driver, tmp_path, job):
    root = tmp_path / "sweep"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    job = str(tmp_path / "escaped") if job == "ABSOLUTE" else job
    archive = tmp_path / "runs.jsonl"
    run = _result(0).to_json()
    archive.write_text("".join(json.dumps({"job": j, "run": run}) + "\n" for j in ("ok", job)))
    with pytest.raises(ValueError, match="is not a directory under") as err:
        driver.restore_archive(archive, root)
    assert repr(job) in str(err.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("results.json")) == []


def test_restore_archive_restores_the_jobs_under_its_root(driver, tmp_path):
    runs = []
    for fold in (0, 1):
        (tmp_path / "sweep" / "model=diffpool" / f"fold{fold}").mkdir(parents=True)
        _result(fold).save(tmp_path / "sweep" / "model=diffpool" / f"fold{fold}")
        runs.append(RunResult.load(tmp_path / "sweep" / "model=diffpool" / f"fold{fold}"))
    archive = driver.save_archive(runs, tmp_path / "runs.jsonl", root=tmp_path / "sweep")
    assert driver.restore_archive(archive, tmp_path / "restored") == 2
    assert RunResult.load(tmp_path / "restored" / "model=diffpool" / "fold1").fold == 1
    assert driver.restore_archive(archive, tmp_path / "restored") == 0
