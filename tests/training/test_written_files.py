"""What a run writes lands where it should, whatever its directory holds (a run copied from
elsewhere, a shared folder): no file is written through a symbolic link planted in it, the
history's columns come from metric names only, and the report keeps what the runs' files
hold to one line of text."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from diffpool.training.callbacks import ELAPSED, AtomicCheckpointIO, EpochHistory
from diffpool.training.report import markdown, write_report
from diffpool.training.results import FairResult, RunFailure, RunResult
from diffpool.utils import files
from diffpool.utils.extras import missing
from helpers import trained_mutag_run

VICTIM = "# someone else's file\nexport IMPORTANT=1\n"
#: a history column that a shell would run as a command (a CSV written over ~/.bashrc)
INJECTED = "x;touch${IFS}PWNED;#"


def _victims(tmp_path: Path, *names: str) -> dict[str, Path]:
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    victims = {name: folder / name for name in names}
    for victim in victims.values():
        victim.write_text(VICTIM)
    return victims


def _result(variant: str = "diffpool", fold: int = 0, **config) -> RunResult:
    return RunResult(
        dataset="MUTAG", fold=fold, num_folds=2, model=variant, epochs=2,
        fair=FairResult(best_epoch=1, val=0.5, test=0.75), test_curve=[0.5, 0.75],
        val_curve=[0.25, 0.5], wall_time_s=1.5,
        config={"data": {"name": "MUTAG", "fold": fold}, "model": {"variant": variant, **config}},
    )  # fmt: skip


def test_results_failures_and_histories_are_not_written_through_planted_links(tmp_path):
    """``<name>.tmp`` was a predictable temporary file: a link there to a file outside
    overwrote that file (results.json, failed.json, history.csv, .hydra/*.yaml)."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    names = ["results.json", "failed.json", "history.csv", ".hydra/config.yaml"]
    victims = _victims(tmp_path, *(n.replace("/", "_") for n in names))
    for name in names:
        (run / f"{name}.tmp").symlink_to(victims[name.replace("/", "_")])
    _result().save(run)
    RunFailure(error="ValueError: boom").save(run)
    history = EpochHistory()
    history.epochs = [{"epoch": 0, "train/loss": 1.0}]
    history.write(run / "history.csv")
    files.write_atomically(run / ".hydra" / "config.yaml", "seed: 0\n")  # save_hydra_config
    assert all(v.read_text() == VICTIM for v in victims.values())
    for name in names:
        assert (run / name).is_file() and not (run / name).is_symlink(), name
    assert RunResult.load(run) == _result()


def test_a_link_in_place_of_a_run_file_is_refused(tmp_path):
    victims = _victims(tmp_path, "results", "history")
    (tmp_path / "results.json").symlink_to(victims["results"])
    (tmp_path / "history.csv").symlink_to(tmp_path / "outside" / "new")
    with pytest.raises(ValueError, match="results.json is a symbolic link"):
        _result().save(tmp_path)
    with pytest.raises(ValueError, match="history.csv is a symbolic link"):
        EpochHistory().write(tmp_path / "history.csv")
    assert victims["results"].read_text() == VICTIM
    assert not (tmp_path / "outside" / "new").exists()


def test_checkpoints_are_not_written_through_planted_links(tmp_path):
    victims = _victims(tmp_path, "last", "best")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last.ckpt.tmp").symlink_to(victims["last"])
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 3}, checkpoints / "last.ckpt")
    assert victims["last"].read_text() == VICTIM
    assert torch.load(checkpoints / "last.ckpt", weights_only=True) == {"epoch": 3}
    (checkpoints / "best.ckpt").symlink_to(victims["best"])
    with pytest.raises(ValueError, match="is a symbolic link"):
        io.save_checkpoint({"epoch": 3}, checkpoints / "best.ckpt")
    assert victims["best"].read_text() == VICTIM
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt",
                                                             "last.ckpt.tmp"]  # fmt: skip


@pytest.mark.parametrize(
    "key",
    [INJECTED, "train/acc\nrm -rf ~", "train/a,b", "val/\x1b[2J", "train/acc\r", "heldout/é",
     "other/acc", "epochs", "", 3, None],
)  # fmt: skip
def test_a_restored_history_keeps_metric_names_only(key, caplog):
    """The history of last.ckpt names the CSV's columns: what is not a metric name is
    dropped (with a warning), so it never reaches a file."""
    history = EpochHistory()
    rows = [{"epoch": 0, "train/loss": 1.0, ELAPSED: 2.0}, {"epoch": 1, key: 1.0}]
    with caplog.at_level(logging.WARNING, "diffpool.training"):
        history.load_state_dict({"epochs": rows})
    assert history.epochs == [{"epoch": 0, "train/loss": 1.0, ELAPSED: 2.0}]
    assert "not a metric (dropped)" in caplog.text
    assert "\n" not in caplog.text.strip() and "\x1b" not in caplog.text


def test_a_restored_history_keeps_numbers_and_refuses_what_is_no_history():
    history = EpochHistory()
    history.load_state_dict(
        {"epochs": [{"epoch": 0, "train/loss": "1\n2", "val/acc": True, "val/loss": 0.5}]}
    )
    assert history.epochs == [{"epoch": 0, "val/loss": 0.5}]
    for state in ({"epochs": "x"}, {"epochs": [[1]]}, {}, {"epochs": [{"epoch": "1"}]},
                  {"epochs": [{"epoch": float("inf")}]}, {"epochs": [{"epoch": 0.5}]}):  # fmt: skip
        with pytest.raises(ValueError, match="EpochHistory state"):
            history.load_state_dict(state)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_mutag_run(tmp_path_factory.mktemp("written"), "run")


def test_resume_writes_nothing_through_planted_links(run_dir, tmp_path):
    """The reviewer's route: a copied, unfinished run with links at the temporary names of
    last.ckpt, history.csv and results.json, and a history column that is a shell command."""
    from hydra import compose, initialize_config_module

    from diffpool.training import train

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "results.json").unlink()
    victims = _victims(tmp_path, "ckpt", "history", "results")
    (run / "checkpoints" / "last.ckpt.tmp").symlink_to(victims["ckpt"])
    (run / "history.csv.tmp").symlink_to(victims["history"])
    (run / "results.json.tmp").symlink_to(victims["results"])
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["callbacks"]["EpochHistory"]["epochs"].append({"epoch": 99, INJECTED: 1.0})
    torch.save(checkpoint, last)
    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=mutag", f"data.root={run_dir.parent / 'TU'}", "trainer.max_epochs=3",
            "model.hidden_channels=16", "logger=none", f"output_dir={run}", "resume=true",
        ])  # fmt: skip
    train(cfg)
    assert all(v.read_text() == VICTIM for v in victims.values())
    assert RunResult.load(run).epochs == 3
    header = (run / "history.csv").read_text().splitlines()[0]
    assert "touch" not in header and ";" not in header
    assert torch.load(last, weights_only=True)["epoch"] == 2


def _sweep(tmp_path: Path, *variants: str) -> Path:
    sweep = tmp_path / "sweep"
    for i, variant in enumerate(variants):
        for fold in (0, 1):
            (sweep / f"job{i}-{fold}").mkdir(parents=True)
            _result(variant, fold).save(sweep / f"job{i}-{fold}")
    return sweep


def test_one_line_escapes_what_is_not_printable():
    from diffpool.training.report import one_line

    assert one_line("a\nb\r\tc\x1b[2J\u2028d\x00") == "a\\nb\\r\\tc\\x1b[2J\\u2028d\\x00"
    assert one_line("diffpool ± 1 — é $x$ \\ |") == "diffpool ± 1 — é $x$ \\ |"


def test_the_report_keeps_values_of_the_runs_on_one_line(tmp_path):
    """A config value with a newline wrote a line of its own into report.md (a ``.pth``
    file's ``import`` line runs at Python's start)."""
    injected = "x\nimport os; os.system('touch PWNED')\n"
    sweep = _sweep(tmp_path, "diffpool", injected, "a|b\x1b[31m")
    failure = RunFailure(error="boom\x1b[2J", path=Path("job\nimport os"))
    groups = write_report(sweep, tmp_path / "out")
    assert set(groups) >= {"md", "csv"}
    text = (tmp_path / "out" / "report.md").read_text()
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("| model.variant=")]
    assert len(table) == 3 and not any(line.startswith("import") for line in lines)
    assert "model.variant=x\\nimport os; os.system('touch PWNED')\\n |" in text
    assert "model.variant=a\\|b\\x1b[31m |" in text
    csv_lines = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and not any(line.startswith("import") for line in csv_lines)
    from diffpool.training.report import collect

    found, _ = collect(sweep)
    failed = markdown(found, [failure], "sweep\nimport x")
    assert "- `job\\nimport os`: boom\\x1b[2J" in failed and "\x1b" not in failed
    assert not any(line.startswith("import") for line in failed.splitlines())


@pytest.mark.parametrize("dangling", [False, True])
def test_the_report_writes_through_no_link(tmp_path, dangling):
    sweep = _sweep(tmp_path, "diffpool", "nolp")
    victim = tmp_path / "outside" / ("zz.pth" if dangling else "bashrc")
    victim.parent.mkdir()
    if not dangling:
        victim.write_text(VICTIM)
    (sweep / "report.md").symlink_to(victim)
    with pytest.raises(ValueError, match="report.md is a symbolic link"):
        write_report(sweep)
    assert not victim.exists() if dangling else victim.read_text() == VICTIM
    assert not (sweep / "report.csv").exists()  # refused before anything is written


@pytest.mark.skipif(bool(missing("viz")), reason="needs the viz extra")
def test_the_report_plots_draw_labels_as_text(tmp_path):
    r"""``$\undefined$`` in a config value broke report.png (mathtext); history columns
    name the legends of curves.png."""
    sweep = _sweep(tmp_path, "diffpool", r"$\undefined$", "$x$")
    for job in sweep.iterdir():
        (job / "history.csv").write_text("epoch,train/acc,val/acc\n0,0.5,0.5\n1,0.6,0.6\n")
    paths = write_report(sweep)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _predictions(levels: int = 2) -> dict:
    return {
        "graph_id": torch.tensor([4, 7]),
        "target": torch.tensor([1, 0]),
        "prediction": torch.tensor([1, 1]),
        "probabilities": torch.tensor([[0.25, 0.75], [0.5, 0.5]]),
        "task": "multiclass",
        "levels": [
            {
                "s": [torch.ones(2, 1)] * 2,
                "clusters": [torch.zeros(2)] * 2,
                "x": [torch.ones(1, 3)] * 2,
            }
        ]
        * levels,
    }


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_are_created_never_written_through_a_link(tmp_path, suffix):
    """A dangling link passed the ``exists()`` check and the file it names was created."""
    from diffpool.training.predict import read_predictions, write_predictions

    if suffix == ".parquet" and missing("parquet"):
        pytest.skip("needs the parquet extra")
    target = tmp_path / "outside" / "new-file"
    target.parent.mkdir()
    out = tmp_path / f"predictions-test{suffix}"
    out.symlink_to(target)
    with pytest.raises(FileExistsError, match="exists: choose another out="):
        write_predictions(_predictions(), out)
    assert not target.exists() and out.is_symlink()
    out.unlink()
    write_predictions(_predictions(), out)
    assert read_predictions(out)["graph_id"].tolist() == [4, 7]
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        write_predictions(_predictions(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", out.name]


def test_assignments_are_created_never_written_through_a_link(tmp_path):
    """Only ``.level0.pt`` was checked before predicting; each level is checked before any is
    written, and none is written through a link."""
    from diffpool.training.predict import load_assignments, write_assignments

    target = tmp_path / "outside" / "new-file"
    target.parent.mkdir()
    stem = tmp_path / "p.csv"
    (tmp_path / "p.csv.level1.pt").symlink_to(target)
    with pytest.raises(FileExistsError, match="level1.pt exists"):
        write_assignments(_predictions(), stem)
    assert not target.exists() and not (tmp_path / "p.csv.level0.pt").exists()
    (tmp_path / "p.csv.level1.pt").unlink()
    written = write_assignments(_predictions(), stem)
    assert [p.name for p in written] == ["p.csv.level0.pt", "p.csv.level1.pt"]
    assert load_assignments(written[1])["graph_id"].tolist() == [4, 7]
