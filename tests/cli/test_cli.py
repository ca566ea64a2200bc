"""The console scripts as users run them: sweeps, reports, DDP on CPU, the installed wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import diffpool
from diffpool.datasets.splits import fold_split
from helpers import ROOT

BIN = Path(sys.executable).parent
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _run(args, cwd, env=None, check=True):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.mark.slow  # a whole sweep: 40 s; CI runs it
def test_sweep_survives_a_failed_job_skips_finished_ones_and_reports(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        str(BIN / "diffpool-train"),
        "-m",
        "data=mutag",
        f"data.root={tmp_path / 'TU'}",
        "model=diffpool,nolp",
        "model/encoder=sage,gcn",
        "model.ratio=0.25,2.0",
        "data.fold=range(1)",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        *QUIET,
    ]
    first = _run(args, tmp_path, check=False)
    assert first.returncode != 0  # ratio=2.0 is invalid
    finished = [p.parent for p in sweep.rglob("results.json")]
    failed = [p.parent for p in sweep.rglob("failed.json")]
    assert len(finished) == 4 and len(failed) == 4
    # one folder per job, although `model/encoder=` holds a slash
    assert {p.parent for p in finished + failed} == {sweep}
    assert "model.encoder=sage" in finished[0].name or "model.encoder=gcn" in finished[0].name
    # quiet: no advertising, no warnings that are not ours, one line per epoch and job
    printed = first.stdout + first.stderr
    assert "Tip" not in printed and "LeafSpec" not in printed, printed[-3000:]
    # the console: one summary line per finished job; the epochs are in each job's train.log
    assert first.stdout.count("] fair:  test/acc") == 4 and "epoch 0/0  train/loss" not in printed
    log = (finished[0] / "train.log").read_text()
    job = finished[0].name.replace("model.encoder", "model/encoder")  # as typed
    assert f"[{job}] epoch 0/0  train/loss" in log
    assert "multiclass task" in log and "multiclass task" not in printed  # the data's line
    assert all("model.ratio=2.0" in str(p) for p in failed)
    assert "ratio must be in (0, 1]" in (failed[0] / "failed.json").read_text()
    encoders = {
        json.loads((p / "results.json").read_text())["config"]["model"]["encoder"] for p in finished
    }
    assert encoders == {"sage", "gcn"}
    # the same sweep again, as parallel jobs: the finished jobs are skipped, nothing rewritten
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("results.json")}
    relaunch = [*args, "launcher=joblib"] if _has_joblib() else args
    _run(relaunch, tmp_path, check=False)
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("results.json")} == stamps
    logs = "".join(p.read_text() for p in sweep.rglob("train.log"))
    assert logs.count("already holds the results of this run") == 4

    report = _run([str(BIN / "diffpool-report"), str(sweep)], tmp_path)
    assert "model.variant=nolp" in report.stdout and "## Failed jobs (4)" in report.stdout
    assert (sweep / "report.csv").exists() and (sweep / "report.png").exists()
    missing = _run([str(BIN / "diffpool-report"), str(tmp_path / "nothing")], tmp_path, check=False)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_a_run_says_what_it_trained_and_where_its_results_are(tmp_path):
    """Any TU dataset by name (any case; here an offline copy of NCI1, made of MUTAG's
    graphs), the features it chose, one line per epoch, one summary line per protocol and
    the results' path, on the console and in train.log."""
    raw = tmp_path / "TU" / "NCI1" / "raw"
    raw.mkdir(parents=True)
    with zipfile.ZipFile(ROOT / "src" / "diffpool" / "datasets" / "archives" / "MUTAG.zip") as zf:
        for member in zf.namelist():
            if member.endswith(".txt") and "MUTAG_" in member:
                name = Path(member).name.replace("MUTAG_", "NCI1_")
                (raw / name).write_bytes(zf.read(member))
    args = [str(BIN / "diffpool-train"), "data=NCI1", f"data.root={tmp_path / 'TU'}"]
    proc = _run([*args, "trainer.max_epochs=2"], tmp_path)
    printed = proc.stdout + proc.stderr
    (run_dir,) = [p.parent for p in tmp_path.rglob("results.json")]
    log = (run_dir / "train.log").read_text()
    for text in (printed, log):
        assert "NCI1 node features: labels (0 node attributes, 7 one-hot node labels" in text
        assert "epoch 1/1  train/loss" in text  # the second of epochs 0 to 1
        assert "fair:  test/acc " in text and "paper: heldout/acc " in text
        assert f"results: {run_dir / 'results.json'}" in text
        assert "Tip" not in text and "LeafSpec" not in text
    assert len(printed.splitlines()) < 40, printed


@pytest.mark.slow  # two CLI runs as subprocesses: 20 s; CI runs it
def test_overwrite_moves_the_earlier_runs_log_aside_too(tmp_path):
    """train.log, which Hydra holds open, goes with the earlier run's files: its lines are
    copied to replaced-<time>/ and the new run's log starts empty."""
    run = ["data=mutag", f"data.root={tmp_path / 'TU'}", "trainer.max_epochs=1", "hydra.run.dir=r"]
    _run([str(BIN / "diffpool-train"), *run], tmp_path)
    _run([str(BIN / "diffpool-train"), *run, "model.ratio=0.5", "overwrite=true"], tmp_path)
    (replaced,) = (tmp_path / "r").glob("replaced-*")
    earlier, now = (replaced / "train.log").read_text(), (tmp_path / "r" / "train.log").read_text()
    assert earlier.count("fair:  test/acc") == 1 and now.count("fair:  test/acc") == 1
    assert "overwrite=true: moved" in now and "overwrite=true" not in earlier


@pytest.mark.slow  # three CLI runs as subprocesses: 15 s; CI runs it
def test_a_typo_leaves_nothing_behind_and_debug_runs_write_no_results(tmp_path):
    typo = _run(
        [
            str(BIN / "diffpool-train"),
            "data=tu",
            "data.name=ENZYMS",
            f"data.root={tmp_path / 'TU'}",
        ],
        tmp_path,
        check=False,
    )
    assert typo.returncode != 0 and "Did you mean ENZYMES?" in typo.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/, no data/TU lock
    debug = _run([str(BIN / "diffpool-train"), "data=mutag", "debug=fdr"], tmp_path)
    assert "a debugging run (trainer.fast_dev_run=True): no results.json" in debug.stdout
    assert (tmp_path / "debug").is_dir() and not list(tmp_path.rglob("results.json"))


def test_help_does_not_wait_for_torch(tmp_path):
    proc = _run(
        [sys.executable, "-X", "importtime", str(BIN / "diffpool-train"), "--help"], tmp_path
    )
    assert "data: aids, bzr" in proc.stdout and "nci1" in proc.stdout
    # the other spellings of the TU names (data=NCI1) are said once, not listed
    (data,) = [line for line in proc.stdout.splitlines() if line.startswith("data: ")]
    assert "NCI1" not in data and "PROTEINS_full" not in data and "proteins_full" in data
    assert "(data: a TU dataset also as the collection spells it and in upper case" in proc.stdout
    assert "experiment_model" not in proc.stdout  # chosen by the defaults list, not by hand
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "lightning" not in imported


@pytest.mark.slow  # a CLI run as a subprocess: 14 s; CI runs it
def test_output_dir_override_keeps_every_file_of_the_run_together(tmp_path):
    """``output_dir=...`` moves results, history and checkpoints alike (before, results and
    history stayed in Hydra's job directory while the checkpoints moved, so resume=true
    looked for last.ckpt in the wrong place)."""
    out, hydra_dir = tmp_path / "out", tmp_path / "hydra"
    args = [
        str(BIN / "diffpool-train"),
        "data=mutag",
        f"data.root={tmp_path / 'TU'}",
        "model.hidden_channels=16",
        "trainer.max_epochs=1",
        f"output_dir={out}",
        f"hydra.run.dir={hydra_dir}",
        *QUIET,
    ]
    _run(args, tmp_path)
    for name in ("results.json", "history.csv", "checkpoints/last.ckpt"):
        assert (out / name).exists(), name
    assert not (hydra_dir / "results.json").exists()
    # the job's config as Hydra writes it, with the run's other files
    assert "model.hidden_channels=16" in (out / ".hydra" / "overrides.yaml").read_text()
    assert "output_dir:" in (out / ".hydra" / "config.yaml").read_text()
    assert "run:" in (out / ".hydra" / "hydra.yaml").read_text()
    assert not (hydra_dir / ".hydra").exists()
    # the same command again finds the finished run where it wrote it
    again = _run(args, tmp_path)
    assert "already holds the results of this run" in again.stdout + again.stderr


def _files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: its bytes and modification time."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_a_run_refused_by_the_lock_leaves_the_running_runs_files_untouched(tmp_path):
    """A second diffpool-train started in the directory of a running one is refused, and
    leaves that run's files as they were: Hydra writes a job's .hydra/ files before the job
    runs, so the job writes them itself, once it holds the directory."""
    from filelock import FileLock

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"):
        (run_dir / name).write_text(f"the running run's {name}\n")
    args = [
        str(BIN / "diffpool-train"),
        "data=mutag",
        f"data.root={tmp_path / 'TU'}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    ]
    with FileLock(str(run_dir / "run.lock")):  # the running run
        before = _files(run_dir)
        refused = _run(args, tmp_path, check=False)
        assert refused.returncode != 0 and "another run is using" in refused.stderr
        assert _files(run_dir) == before


def _has_joblib() -> bool:
    import importlib.util

    return importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None


@pytest.mark.slow  # two processes per case: CI's slow step runs it
@pytest.mark.parametrize("lightning_sampler", [True, False])
def test_ddp_on_cpu_synchronises_metrics_and_sees_every_graph_once(tmp_path, lightning_sampler):
    """trainer=ddp_sim: two processes (gloo), Lightning's DDP launcher, the Hydra app; with
    Lightning's default use_distributed_sampler=True (it hands GraphBatchSampler a
    DistributedSampler) and without."""
    record = tmp_path / "record"
    _run(
        [
            str(BIN / "diffpool-train"),
            "trainer=ddp_sim",
            "data=mutag",
            f"data.root={tmp_path / 'TU'}",
            "data.batch_size=16",
            "trainer.max_epochs=2",
            "model.hidden_channels=16",
            f"trainer.use_distributed_sampler={str(lightning_sampler).lower()}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.record._target_=helpers.RecordRanks",
            f"+callbacks.record.directory={record}",
            *QUIET,
        ],
        tmp_path,
    )
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    import torch

    labels = torch.tensor([int(y) for y in _mutag_labels(tmp_path / "TU")])
    split = fold_split(labels, 0, 10, seed=0, val_ratio=0.1)
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert a["world_size"] == b["world_size"] == 2
        assert sorted(a["train"] + b["train"]) == split.train.tolist()  # each graph once
        assert not set(a["train"]) & set(b["train"])
        assert sorted(a["val"] + b["val"]) == split.val.tolist()
        # the logged val/acc is the same on both ranks and counts every graph once
        assert a["val_acc"] == b["val_acc"]
        expected = (a["val_correct"] + b["val_correct"]) / split.val.numel()
        assert a["val_acc"] == pytest.approx(expected, abs=1e-6)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs"] == 2 and results["fair"]["test"] is not None


def _mutag_labels(root: Path) -> list[str]:
    return (root / "MUTAG" / "raw" / "MUTAG_graph_labels.txt").read_text().split()


@pytest.mark.slow  # builds and installs the wheel: CI's slow step runs it
def test_installed_wheel_trains_from_an_empty_directory(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (dependencies borrowed
    from this one, the package only from the wheel) and run diffpool-train from an empty
    directory: configs and bundled data must come from the installed package."""
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        tmp_path,
    )
    wheel = next(wheels.glob("diffpool-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], tmp_path)
    here = _run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], tmp_path)
    # the dependencies, not the editable diffpool (its .pth hook is not processed from here)
    Path(site.stdout.strip(), "deps.pth").write_text(here.stdout.strip() + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        tmp_path,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(python), "-c", "import diffpool.conf; print(diffpool.conf.__file__)"], empty)
    assert where.stdout.strip().startswith(str(venv))
    _run(
        [str(venv / "bin" / "diffpool-train"), "trainer.max_epochs=1", *QUIET],
        empty,
        env={"PYTHONPATH": ""},
    )
    results = list(empty.rglob("results.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["dataset"] == "ENZYMES"
    # installed from a wheel: the version, and no git commit to name
    provenance = json.loads(results[0].read_text())["provenance"]
    assert provenance["commit"] is None and provenance["diffpool"] == diffpool.__version__
    assert (empty / "data" / "TU" / "ENZYMES" / "raw" / "ENZYMES_A.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_killed_at_a_random_point_resumes_to_the_same_result(tmp_path, seed):
    """SIGKILL at a random moment of training (no graceful shutdown: mid-batch, mid-epoch or
    while a checkpoint is written), then resume=true: the run ends with the results of a run
    that never stopped."""
    import csv
    import random
    import signal
    import time

    def command(out, *extra):
        return [
            str(BIN / "diffpool-train"),
            "data=mutag",
            f"data.root={tmp_path / 'TU'}",
            "trainer.max_epochs=4",
            "model.hidden_channels=16",
            "model.dropout=0.2",
            f"hydra.run.dir={out}",
            *QUIET,
            *extra,
        ]

    _run(command(tmp_path / "straight"), tmp_path)
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    with open(tmp_path / "straight" / "history.csv") as handle:
        elapsed = [float(r["time/elapsed_s"]) for r in csv.DictReader(handle)]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        command(killed), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # after 1, 2 or 3 of the 4 epochs, somewhere in the first half of the next one
    rng = random.Random(seed)
    epochs_done, fraction = rng.randint(1, 3), rng.uniform(0.0, 0.5)
    epoch_time = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)
    deadline = time.time() + 300
    while proc.poll() is None:
        assert time.time() < deadline
        if (killed / "history.csv").exists():
            with open(killed / "history.csv") as handle:
                if sum(1 for _ in handle) - 1 >= epochs_done:
                    break
        time.sleep(0.02)
    time.sleep(fraction * epoch_time)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before the kill"
    # a kill after an epoch's history but before its last.ckpt (the checkpoint callbacks run
    # last) leaves no last.ckpt: resume=true then starts again, and ends the same
    _run(command(killed, "resume=true"), tmp_path)
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["epochs"] == straight["epochs"] == 4
    assert resumed["test_curve"] == pytest.approx(straight["test_curve"], abs=1e-6)
    assert resumed["val_curve"] == pytest.approx(straight["val_curve"], abs=1e-6)
    assert resumed["fair"]["test"] == pytest.approx(straight["fair"]["test"], abs=1e-6)


@pytest.mark.parametrize(
    "override, absent, refused",
    [
        ("launcher=joblib", "hydra_joblib_launcher", True),
        ("+launcher=slurm", "hydra_submitit_launcher", True),
        ("launcher=joblib", "hydra_submitit_launcher", False),  # slurm's plugin is not needed
        ("launcher=null", "hydra_joblib_launcher", False),
    ],
)
def test_a_launcher_without_its_plugin_is_an_error_naming_the_extra(
    monkeypatch, override, absent, refused
):
    """Hydra's own error named only its config group (Could not find 'hydra/launcher/joblib')."""
    from diffpool.cli import train

    monkeypatch.setattr(train, "missing", lambda extra: [f"hydra_plugins.{absent}"])
    monkeypatch.setattr(sys, "argv", ["diffpool-train", "-m", override, "--bogus-flag"])
    if refused:
        with pytest.raises(SystemExit, match=f"needs the 'launchers' extra .*{absent}"):
            train.main()
    else:  # past the check: Hydra refuses the bogus flag
        with pytest.raises(SystemExit) as err:
            train.main()
        assert "launchers" not in str(err.value.code)


@pytest.mark.parametrize(
    "override",
    [
        "logger=tensorboard",
        "logger=[csv,tensorboard]",
        "logger=[csv, tensorboard]",
        "logger=[csv, 'tensorboard']",
    ],
)
def test_the_tensorboard_logger_without_its_extra_is_an_error_naming_it(monkeypatch, override):
    """logger=tensorboard without the tensorboard package: an error that names the extra, as
    the README promises for every extra (it was Lightning's, once the run had started)."""
    from diffpool.cli import train

    monkeypatch.setattr(train, "missing", lambda extra: [extra])
    monkeypatch.setattr(train, "find_spec", lambda name: None, raising=False)
    monkeypatch.setattr(sys, "argv", ["diffpool-train", override, "--bogus-flag"])
    with pytest.raises(SystemExit, match="needs the 'tensorboard' extra"):
        train.main()
