"""Using a trained run: Trainer.predict, the prediction and assignment files, load_run's
errors, diffpool-predict and diffpool-train train=false from a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from diffpool.training import RunResult
from diffpool.training.predict import (
    collect_predictions,
    load_assignments,
    load_run,
    read_predictions,
    write_assignments,
    write_predictions,
)
from helpers import ROOT, trained_mutag_run

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_mutag_run(tmp_path_factory.mktemp("predict"), "diffpool", "model.num_levels=2")


def _predict(module, datamodule):
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    return collect_predictions(trainer.predict(module, datamodule=datamodule))


def test_predictions_round_trip_and_equal_the_modules_output(run_dir, tmp_path):
    module, datamodule = load_run(run_dir)
    module.predict_assignments = True
    predictions = _predict(module, datamodule)
    test = datamodule.split.test.sort().values
    assert torch.equal(predictions["graph_id"], test)  # every test graph once, in order
    # the module itself, graph by graph, in eval mode
    module.eval()
    with torch.no_grad():
        for i, graph_id in enumerate(test.tolist()[:5]):
            from torch_geometric.data import Batch

            out = module(Batch.from_data_list([datamodule.dataset[graph_id]]))
            torch.testing.assert_close(
                predictions["probabilities"][i], out.logits.softmax(-1)[0], rtol=1e-5, atol=1e-6
            )
    path = write_predictions(predictions, tmp_path / "p.csv")
    back = read_predictions(path)
    for key in ("graph_id", "target", "prediction"):
        assert torch.equal(back[key], predictions[key]), key
    assert torch.equal(back["probabilities"], predictions["probabilities"].double())  # exact
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        write_predictions(predictions, path)
    # the assignments: one file per level, per graph without padding
    files = write_assignments(predictions, tmp_path / "p.csv")
    assert [f.name for f in files] == ["p.csv.level0.pt", "p.csv.level1.pt"]
    first = load_assignments(files[0])
    assert torch.equal(first["graph_id"], test)
    for graph_id, s, clusters, x in zip(test.tolist(), first["s"], first["clusters"], first["x"]):
        assert s.shape[0] == datamodule.dataset[graph_id].num_nodes
        torch.testing.assert_close(s.sum(-1), torch.ones(s.shape[0]))  # rows of a softmax
        assert torch.equal(clusters, s.argmax(-1)) and x.shape == (s.shape[1], x.shape[1])


def test_bad_input_is_named(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_run(tmp_path / "nothing")
    broken = tmp_path / "copy" / "checkpoints" / "bad.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    (tmp_path / "copy" / "results.json").write_text((run_dir / "results.json").read_text())
    with pytest.raises(ValueError, match="not a readable GraphClassifier checkpoint"):
        load_run(broken)
    with pytest.raises(ValueError, match="takes 7 node features, but ENZYMES .* gives 3:"):
        load_run(run_dir, data={"name": "ENZYMES"})


def test_the_best_checkpoint_is_the_fair_protocols_or_none(tmp_path):
    """checkpoint=best is the fair protocol's epoch: a run whose best-*.ckpt holds another
    metric's best (callbacks.model_checkpoint.monitor=val/loss, no fair checkpoint) is
    refused, not predicted with that file; checkpoint=last still predicts."""
    run = trained_mutag_run(
        tmp_path, "loss", "model=base", "callbacks.model_checkpoint.monitor=val/loss"
    )
    assert RunResult.load(run).fair.checkpoint is None
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    with pytest.raises(FileNotFoundError, match="no checkpoint of the fair protocol's epoch"):
        load_run(run)
    module, datamodule = load_run(run, checkpoint="last")
    assert len(_predict(module, datamodule)["prediction"]) == len(datamodule.split.test)


def test_assignments_of_a_flat_model_are_refused(tmp_path):
    module, datamodule = load_run(trained_mutag_run(tmp_path, "base", "model=base"))
    module.predict_assignments = True
    with pytest.raises(ValueError, match="has no pooling levels"):
        _predict(module, datamodule)


def _cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # the console scripts as subprocesses: 22 s; CI runs it
def test_the_console_scripts_predict_and_evaluate(run_dir, tmp_path):
    predict = [str(BIN / "diffpool-predict"), f"run={run_dir}", "out=p.csv", "assignments=true"]
    first = _cli(predict, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "graphs of MUTAG, test (fold 0), accuracy" in first.stdout
    assert (tmp_path / "p.csv").exists() and (tmp_path / "p.csv.level1.pt").exists()
    again = _cli(predict, tmp_path)
    assert again.returncode == 2 and "exists: choose another out=" in again.stderr
    typo = _cli([str(BIN / "diffpool-predict"), f"run={run_dir}", "splt=all"], tmp_path)
    assert typo.returncode == 1 and "Key 'splt' is not in struct" in typo.stderr  # Hydra's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.csv.level0.pt",
                                                           "p.csv.level1.pt"]  # fmt: skip
    # lightning-hydra-template's eval: the best checkpoint on the test fold
    best = RunResult.load(run_dir).fair
    evaluate = _cli(
        [str(BIN / "diffpool-train"), "data=mutag", f"data.root={run_dir.parent / 'TU'}",
         "train=false", f"ckpt_path={best.checkpoint}", "hydra.run.dir=eval"],
        tmp_path,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["metrics"]["test/acc"] == pytest.approx(best.test, abs=1e-6)
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.parametrize(
    "task, target, prediction, probabilities, header",
    [
        ("binary", torch.tensor([[1.0], [0.0]]), torch.tensor([[1], [0]]),
         torch.tensor([[0.75], [0.25]]), "graph_id,target,prediction,prob_1"),
        ("multilabel", torch.tensor([[1.0, float("nan")], [0.0, 1.0]]),
         torch.tensor([[1, 0], [0, 1]]), torch.tensor([[0.75, 0.5], [0.25, 0.625]]),
         "graph_id,target_0,target_1,prediction_0,prediction_1,prob_0,prob_1"),
        ("regression", torch.tensor([[0.5], [-1.25]]), torch.tensor([[0.25], [-1.0]]), None,
         "graph_id,target,prediction"),
    ],
)  # fmt: skip
def test_prediction_tables_of_every_task_round_trip(
    tmp_path, task, target, prediction, probabilities, header
):
    predictions = {"graph_id": torch.tensor([4, 7]), "target": target,
                   "prediction": prediction, "task": task}  # fmt: skip
    if probabilities is not None:
        predictions["probabilities"] = probabilities
    path = write_predictions(predictions, tmp_path / "p.csv")
    assert path.read_text().splitlines()[0] == header
    back = read_predictions(path)
    assert back["graph_id"].tolist() == [4, 7]
    assert torch.allclose(back["prediction"].double(), prediction.view(2, -1).squeeze(-1).double())
    expected = target.view(2, -1).squeeze(-1).double()  # a missing label reads back as NaN
    assert torch.allclose(back["target"].double(), expected, equal_nan=True)
    if probabilities is None:
        assert back["probabilities"] is None
    else:
        assert torch.equal(back["probabilities"], probabilities.double())


@pytest.mark.parametrize(
    "text", ["", "graph_id,target,prediction\n0,1\n", "graph_id,target,prediction\n0,1,abc\n"]
)
def test_a_table_that_is_no_prediction_table_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="is not a prediction table") as err:
        read_predictions(path)
    assert str(path) in str(err.value)


class _Pickled:
    """What a crafted pickle runs on load: it touches ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_name_of_the_callers_data_is_trusted_for_the_callers_specs_only(run_dir, tmp_path):
    """The caller names PyG's ZINC for its dataset (as data=zinc does): the run's
    results.json, which keeps its own data.transform, must not build ZINC there with its
    own root (ZINC unpickles its raw files)."""
    import pickle
    import shutil

    from diffpool.utils.targets import UntrustedTargetError

    run, marker, root = tmp_path / "run", tmp_path / "MARKER", tmp_path / "zinc"
    shutil.copytree(run_dir, run)
    (root / "raw").mkdir(parents=True)
    for name in ("train.pickle", "val.pickle", "test.pickle", "train.index", "val.index",
                 "test.index"):  # fmt: skip
        (root / "raw" / name).write_bytes(pickle.dumps(_Pickled(marker)))
    zinc = "torch_geometric.datasets.ZINC"
    result = json.loads((run / "results.json").read_text())
    result["config"]["data"]["transform"] = {"_target_": zinc, "root": str(root)}
    (run / "results.json").write_text(json.dumps(result))
    data = {"dataset": {"_target_": zinc, "root": str(tmp_path / "mine")}}
    with pytest.raises(UntrustedTargetError, match=zinc) as err:
        load_run(run, data=data)
    assert not marker.exists()
    assert "results.json" in str(err.value) and "transform" in str(err.value)


def test_a_setting_the_split_did_not_read_does_not_refuse_its_checkpoint(tmp_path):
    """A run of a split file with ``val_ratio=0`` (ignored then, an error since): its data
    settings are rebuilt with the default val_ratio, which its checkpoint's check accepts;
    a fold of another split is still refused."""
    from types import SimpleNamespace

    from diffpool.training.predict import _check_split

    path = tmp_path / "run.ckpt"
    trained = {"split": "file", "fold": 0, "val_ratio": 0.0, "inner": 0}
    torch.save({"datamodule_hyper_parameters": trained}, path)
    given = {"split": "file", "fold": 0, "val_ratio": 0.1, "inner": 0}
    _check_split(path, SimpleNamespace(hparams=given))
    with pytest.raises(ValueError, match="data.fold=1"):
        _check_split(path, SimpleNamespace(hparams={**given, "fold": 1}))
    torch.save({"datamodule_hyper_parameters": {**trained, "split": "kfold"}}, path)
    with pytest.raises(ValueError, match="data.val_ratio=0.1"):
        _check_split(path, SimpleNamespace(hparams={**given, "split": "kfold"}))


def test_a_run_that_stored_a_setting_its_split_did_not_read_loads(run_dir, tmp_path):
    """A run of before an unread split setting was an error (a k-fold run storing the split
    file's ``inner``): its data is rebuilt without it, as it trained, not refused for it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    result = json.loads((run / "results.json").read_text())
    assert result["config"]["data"].get("split", "kfold") == "kfold"
    result["config"]["data"]["inner"] = 3
    (run / "results.json").write_text(json.dumps(result))
    module, datamodule = load_run(run)
    assert datamodule.hparams["inner"] == 0
    reference = load_run(run_dir)[1]
    assert torch.equal(datamodule.split.test, reference.split.test)
