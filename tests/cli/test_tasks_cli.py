"""Every task from the command line: diffpool-train on a dataset given by its _target_, the
selection metric in its direction, diffpool-predict and diffpool-report; OGB offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffpool.training.predict import read_predictions
from helpers import ROOT

BIN = Path(sys.executable).parent
FAST = ["trainer.max_epochs=2", "model.hidden_channels=16", "model.num_levels=1"]


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")  # fmt: skip
    return proc


# one task in the README's test command, every task in CI's slow step
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "kind, metric, higher",
    [("multiclass", "acc", True), pytest.param("binary", "rocauc", True, marks=SLOW),
     pytest.param("multilabel", "rocauc", True, marks=SLOW),
     pytest.param("regression", "mae", False, marks=SLOW)],
)  # fmt: skip
def test_every_task_trains_from_the_cli(tmp_path, kind, metric, higher):
    run = tmp_path / "run"
    task = [f"data.task={kind}"] if kind in ("binary", "multilabel") else []
    _run([str(BIN / "diffpool-train"), "data=pyg",
          "data.dataset._target_=helpers.TinyGraphDataset", f"+data.dataset.kind={kind}",
          "data.num_folds=4", *task, *FAST, f"hydra.run.dir={run}"], tmp_path)  # fmt: skip
    result = json.loads((run / "results.json").read_text())
    assert (result["task"], result["metric"], result["higher_is_better"]) == (kind, metric, higher)
    history = (run / "history.csv").read_text().splitlines()[0]
    assert f"val/{metric}" in history and f"heldout/{metric}" in history
    # the best checkpoint is the best epoch in the task's direction
    curve = result["val_curve"]
    best = max(range(len(curve)), key=lambda i: curve[i] if higher else -curve[i])
    assert result["fair"]["best_epoch"] == best
    log = (run / "train.log").read_text()
    assert f"val/{metric}" in log and f"fair:  test/{metric}" in log
    if kind in ("multilabel", "regression"):
        out = tmp_path / "predictions.csv"
        # a run of the user's own dataset class: named again at the call (a file is data)
        trust = "trust=helpers.TinyGraphDataset"
        done = _run([str(BIN / "diffpool-predict"), f"run={run}", f"out={out}", trust], tmp_path)
        assert f"12 graphs of tiny-{kind}, test (fold 0)" in done.stdout
        assert ("accuracy" in done.stdout) == (kind == "multilabel")  # none for values
        table = read_predictions(out)
        header = out.read_text().splitlines()[0]
        if kind == "multilabel":
            assert "target_3" in header and "prob_3" in header
            assert table["prediction"].shape == (12, 4)
        else:
            assert header == "graph_id,target,prediction"
            assert table["probabilities"] is None and table["prediction"].dtype.is_floating_point
    if kind == "regression":
        report = _run([str(BIN / "diffpool-report"), str(run.parent)], tmp_path)
        assert "mae: lower is better" in report.stdout


@pytest.mark.slow  # OGB end to end from the CLI: CI runs it
def test_ogb_from_the_cli(tmp_path):
    pytest.importorskip("ogb", reason="the ogb extra")
    from helpers import write_ogb_layout

    write_ogb_layout(tmp_path / "OGB", "ogbg-molhiv")
    run = tmp_path / "run"
    _run([str(BIN / "diffpool-train"), "data=ogbg-molhiv", f"data.dataset.root={tmp_path / 'OGB'}",
          "model/encoder=gine", *FAST, f"hydra.run.dir={run}"], tmp_path)  # fmt: skip
    result = json.loads((run / "results.json").read_text())
    assert (result["task"], result["metric"]) == ("binary", "rocauc")
    assert result["ogb"]["rocauc"] == pytest.approx(result["fair"]["test"], abs=1e-5)
    assert "OGB evaluator's test rocauc" in (run / "train.log").read_text()


@pytest.mark.parametrize(
    "overrides, label",
    [(["data=enzymes"], "ENZYMES"), (["data=ogbg-molhiv"], "ogbg-molhiv"),
     (["data=pyg", "data.dataset._target_=my.pkg.MyGraphs"], "MyGraphs"),
     (["data=pyg", "data.dataset._target_=x.TUDataset", "+data.dataset.name=NCI1"], "NCI1")],
)  # fmt: skip
def test_every_data_config_names_its_run_directory(overrides, label):
    """``runs/<dataset>/<model>/<time>`` for the TU configs and the generic ones (which have no
    data.name): the run directory resolves without an explicit hydra.run.dir."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import diffpool.cli.train  # noqa: F401  (registers the resolvers)

    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    resolved = OmegaConf.create({"d": run_dir, "data": cfg.data, "model": cfg.model})
    assert resolved.d.split("/")[:3] == ["runs", label, "diffpool"]
