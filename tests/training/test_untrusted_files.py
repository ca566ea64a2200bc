"""A run's files are data: a crafted checkpoint or results.json runs no code through any route
that reads one (load_from_checkpoint, load_run, diffpool-predict, diffpool-viz,
diffpool-train train=false, resume), and the refusal names the file and the name."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from diffpool.training import GraphClassifier
from diffpool.training.predict import load_assignments, load_run
from diffpool.training.results import RunResult
from diffpool.utils.targets import UntrustedTargetError
from helpers import trained_mutag_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_mutag_run(tmp_path_factory.mktemp("untrusted"), "run")


def _attack(marker: Path) -> dict:
    """What the issue's attacker stored: a registered-looking function of the package that
    instantiates any spec, around ``os.system``."""
    return {
        "_target_": "diffpool.datasets.source.instantiate_dataset",
        "_recursive_": False,
        "spec": {"_target_": "os.system", "command": f"id > {marker}"},
    }


def _write_text(marker: Path) -> dict:
    return {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "x"}


def _crafted_copy(run_dir: Path, dest: Path, key: str | None, spec: dict | None) -> Path:
    """A copy of the run whose best checkpoint has ``hyper_parameters[key] = spec``."""
    shutil.copytree(run_dir, dest)
    result = json.loads((dest / "results.json").read_text())
    best = dest / "checkpoints" / Path(result["fair"]["checkpoint"]).name
    result["fair"]["checkpoint"] = str(best)
    (dest / "results.json").write_text(json.dumps(result))
    if key is not None:
        checkpoint = torch.load(best, weights_only=True)
        checkpoint["hyper_parameters"][key] = spec
        torch.save(checkpoint, best)
        torch.load(best, weights_only=True)  # it still loads as weights only
    return best


def _crafted_results(run_dir: Path, dest: Path, spec: dict) -> None:
    _crafted_copy(run_dir, dest, None, None)
    result = json.loads((dest / "results.json").read_text())
    result["config"]["data"] = {
        "_target_": "diffpool.training.GraphDataModule",
        "_recursive_": False,
        "dataset": spec,
    }
    (dest / "results.json").write_text(json.dumps(result))


def _cli(main, args, capsys) -> tuple[int, str, str]:
    """A console script's ``main(argv)`` in this process: its exit code, stdout, stderr."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _compose(*overrides: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module("diffpool.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("key", ["node_encoder", "edge_encoder", "model", "optimizer"])
def test_load_from_checkpoint_builds_no_name_outside_the_registries(run_dir, tmp_path, key):
    marker = tmp_path / "MARKER"
    best = _crafted_copy(run_dir, tmp_path / "run", key, _attack(marker))
    with pytest.raises(UntrustedTargetError) as err:
        GraphClassifier.load_from_checkpoint(best, weights_only=True)
    assert not marker.exists()
    message = str(err.value)
    assert str(best) in message and "diffpool.datasets.source.instantiate_dataset" in message
    assert "trust=" in message  # how to name it again
    with pytest.raises(UntrustedTargetError):  # the Python front end of predict
        load_run(tmp_path / "run")
    assert not marker.exists()


def test_a_nested_name_is_refused_and_pickles_are_never_loaded(run_dir, tmp_path):
    marker = tmp_path / "MARKER"
    spec = {"_target_": "diffpool.nn.CategoricalEncoder", "x": _write_text(marker)}
    best = _crafted_copy(run_dir, tmp_path / "run", "node_encoder", spec)
    with pytest.raises(UntrustedTargetError, match="pathlib.Path.write_text"):
        GraphClassifier.load_from_checkpoint(best)
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only=True"):
        GraphClassifier.load_from_checkpoint(best, weights_only=False)


def test_a_name_trusted_at_the_call_is_built(run_dir, tmp_path):
    """The user may name their own class again: then it is theirs (here a harmless one)."""
    spec = {"_target_": "torch.nn.Linear", "in_features": 7, "out_features": 7}  # torch.nn
    best = _crafted_copy(run_dir, tmp_path / "run", "node_encoder", spec)
    module = GraphClassifier.load_from_checkpoint(best, strict=False)  # no weights of it
    assert isinstance(module.node_encoder, torch.nn.Linear)
    own = {"_target_": "helpers.IdentityEncoder", "out_channels": 7}  # in no registry
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["hyper_parameters"]["node_encoder"] = own
    torch.save(checkpoint, best)
    with pytest.raises(UntrustedTargetError, match="helpers.IdentityEncoder"):
        GraphClassifier.load_from_checkpoint(best)
    module = GraphClassifier.load_from_checkpoint(best, trust=["helpers.IdentityEncoder"])
    assert type(module.node_encoder).__name__ == "IdentityEncoder"


@pytest.mark.parametrize("how", ["checkpoint", "results"])
def test_predict_and_viz_refuse_a_crafted_run(run_dir, tmp_path, how, capsys):
    from diffpool.cli import predict, viz

    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    if how == "checkpoint":
        _crafted_copy(run_dir, run, "node_encoder", _attack(marker))
        named, file = "diffpool.datasets.source.instantiate_dataset", "best-"
    else:
        _crafted_results(run_dir, run, _write_text(marker))
        named, file = "pathlib.Path.write_text", "results.json"
    for main, args in ((predict.main, [f"run={run}"]), (viz.main, [run])):
        code, _, err = _cli(main, args, capsys)
        assert code == 2 and named in err and file in err, err
        assert not marker.exists()
        assert not list(run.glob("predictions-*")) and not list(run.glob("pooling-*"))


def test_predict_trusts_a_dataset_named_on_its_command_line(run_dir, tmp_path, capsys):
    """A run of the user's own dataset class: refused from results.json alone, predicted once
    the user names the class again (here PyG's TUDataset under another path, not in the
    registries)."""
    from diffpool.cli import predict

    run = tmp_path / "run"
    name = "torch_geometric.datasets.TUDataset"  # PyG's classes read pickles: trusted only
    spec = {"_target_": name, "root": str(tmp_path / "pyg"), "name": "MUTAG"}
    _crafted_results(run_dir, run, spec)
    shutil.copytree(run_dir.parent / "TU" / "MUTAG" / "raw", tmp_path / "pyg" / "MUTAG" / "raw")
    code, _, err = _cli(predict.main, [f"run={run}"], capsys)
    assert code == 2 and f"'{name}'" in err and f"trust={name}" in err, err
    code, out, err = _cli(predict.main, [f"run={run}", f"trust={name}"], capsys)
    assert code == 0 and "wrote" in out, err


def test_evaluate_refuses_a_crafted_checkpoint(run_dir, tmp_path):
    """``diffpool-train train=false ckpt_path=FILE`` (the job function it runs)."""
    from diffpool.cli.train import run

    marker = tmp_path / "MARKER"
    best = _crafted_copy(run_dir, tmp_path / "run", "node_encoder", _attack(marker))
    cfg = _compose(
        "train=false",
        f"ckpt_path={best}",
        "data=mutag",
        f"data.root={run_dir.parent / 'TU'}",
        f"output_dir={tmp_path / 'eval'}",
    )
    with pytest.raises(UntrustedTargetError, match="instantiate_dataset") as err:
        run(cfg)
    assert str(best) in str(err.value)
    assert not marker.exists() and not (tmp_path / "eval" / "eval.json").exists()


def test_evaluate_replaces_no_run_and_no_earlier_evaluation(run_dir, tmp_path):
    """``train=false`` pointed at a training run's directory (or at an earlier evaluation's)
    would have rewritten its record of how it was trained and its eval.json: refused, all
    left as it was; a directory of its own is written."""
    from diffpool.cli.train import run
    from diffpool.training.run import RunDirectoryError

    trained = tmp_path / "trained"
    shutil.copytree(run_dir, trained)
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    best = RunResult.load(trained).fair.checkpoint

    def evaluate(out: Path):
        return run(_compose("train=false", f"ckpt_path={best}", "data=mutag",
                            f"data.root={run_dir.parent / 'TU'}", f"output_dir={out}"))  # fmt: skip

    with pytest.raises(RunDirectoryError, match="holds results.json, checkpoints"):
        evaluate(trained)
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before
    evaluate(tmp_path / "eval")
    assert "test/acc" in json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    with pytest.raises(RunDirectoryError, match="holds eval.json"):
        evaluate(tmp_path / "eval")


def test_a_checkpoint_is_evaluated_on_the_split_it_was_trained_with(run_dir, tmp_path):
    """Another fold's test set holds graphs the checkpoint trained on: train=false and
    diffpool-predict refuse a data setting that moves its split, naming it."""
    from diffpool.cli.train import run

    best = RunResult.load(run_dir).fair.checkpoint
    root, out = run_dir.parent / "TU", tmp_path / "e"
    cfg = _compose("train=false", f"ckpt_path={best}", "data=mutag", "data.fold=3",
                   f"data.root={root}", f"output_dir={out}")  # fmt: skip
    with pytest.raises(ValueError, match=r"trained on another split .*data.fold=3 \(trained"):
        run(cfg)
    with pytest.raises(ValueError, match=r"data.seed=5 \(trained with 0\)"):
        load_run(run_dir, data={"seed": 5})
    assert len(load_run(run_dir, data={"predict_split": "all", "seed": 5})) == 2


def test_the_split_check_fails_closed(run_dir, monkeypatch):
    """A checkpoint whose split entry cannot be read is not evaluated as if it had none (the
    check skipped itself on any error, a legacy-format file's included)."""
    from diffpool.utils import files

    def unreadable(path, key):
        raise RuntimeError("cannot read")

    monkeypatch.setattr(files, "checkpoint_entry", unreadable)
    with pytest.raises(RuntimeError, match="cannot read"):
        load_run(run_dir, data={"seed": 5})


def _resume(run_dir: Path, run: Path):
    """The config that resumes the copy ``run`` of ``run_dir`` for one more epoch."""
    return _compose(
        "data=mutag",
        f"data.root={run_dir.parent / 'TU'}",
        "trainer.max_epochs=3",
        "model.hidden_channels=16",
        "logger=none",
        f"output_dir={run}",
        "resume=true",
    )


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_resume_reads_last_ckpt_as_weights_only(run_dir, tmp_path, monkeypatch):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` makes torch unpickle where the caller passes no
    ``weights_only``; resume passes it, so a pickled last.ckpt is refused."""
    from diffpool.training import train

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "results.json").unlink()  # an unfinished run, to resume
    with open(run / "checkpoints" / "last.ckpt", "wb") as handle:
        pickle.dump({"state_dict": _Payload(marker)}, handle)
    cfg = _resume(run_dir, run)
    with pytest.raises(ValueError, match="not a readable torch file.*resume=true continues"):
        train(cfg)
    assert not marker.exists()


def test_what_lightning_would_build_from_a_checkpoint_is_not_read(run_dir, tmp_path, monkeypatch):
    """A class object as ``_target_`` (a weights-only file can hold PyG's allowlisted classes),
    Lightning's ``_instantiator`` key (it imports a class path) and an ``hparams_file`` (YAML
    that can name code) build nothing."""
    from collections import OrderedDict

    from torch_geometric.loader import ClusterData

    best = _crafted_copy(run_dir, tmp_path / "run", "node_encoder", {"_target_": OrderedDict})
    with pytest.raises(UntrustedTargetError, match="not a name"):
        GraphClassifier.load_from_checkpoint(best)
    # PyG allowlists ClusterData for weights-only loads (it loads a path, unpickling where a
    # weights-only load fails): the package's files are read with torch's allowlist only
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["hyper_parameters"]["node_encoder"] = {"_target_": ClusterData}
    torch.save(checkpoint, best)
    with pytest.raises(pickle.UnpicklingError, match="ClusterData"):
        GraphClassifier.load_from_checkpoint(best)
    with pytest.raises(pickle.UnpicklingError, match="ClusterData"):
        load_assignments(best)
    checkpoint["hyper_parameters"]["node_encoder"] = None
    (tmp_path / "evilmod_untrusted.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    checkpoint["hyper_parameters"]["_class_path"] = "evilmod_untrusted.Evil"
    torch.save(checkpoint, best)
    module = GraphClassifier.load_from_checkpoint(best)  # those keys are not the module's
    assert module.node_encoder is None and not (tmp_path / "MARKER").exists()
    yaml = tmp_path / "hparams.yaml"
    yaml.write_text("node_encoder:\n  _target_: !!python/name:os.system ''\n")
    with pytest.raises(ValueError, match="hparams_file is not read"):
        GraphClassifier.load_from_checkpoint(best, hparams_file=yaml)


def test_resume_deletes_nothing_a_checkpoint_names_outside_its_directory(run_dir, tmp_path):
    """ModelCheckpoint removes the file its state names as the best when a better one comes:
    a crafted state naming ``../../victim`` must not reach it."""
    from diffpool.training import train

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "results.json").unlink()
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    escape = str(run / "checkpoints") + "/" + "../" * len(run.parts) + str(victim)[1:]
    for state in checkpoint["callbacks"].values():
        if "best_model_path" in state:
            state["best_model_path"] = escape
            state["kth_best_model_path"] = escape
            state["best_k_models"] = {escape: torch.tensor(-1.0)}
    torch.save(checkpoint, last)
    cfg = _resume(run_dir, run)
    train(cfg)
    assert (victim / "keep.txt").read_text() == "mine"
    assert (run / "results.json").exists()


def test_a_run_reads_its_own_checkpoint_and_starts_no_workers(run_dir, tmp_path):
    """results.json names the best checkpoint and the loader processes: the checkpoint is
    read from the run's own checkpoints/ (not a file elsewhere), the processes are not
    started (a user's ``data={"num_workers": ...}`` may ask for them)."""
    run = tmp_path / "run"
    _crafted_copy(run_dir, run, None, None)
    result = json.loads((run / "results.json").read_text())
    own = Path(result["fair"]["checkpoint"]).name
    elsewhere = tmp_path / "elsewhere" / own
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"not this one")
    result["fair"]["checkpoint"] = str(elsewhere)
    result["config"]["data"]["num_workers"] = 64
    (run / "results.json").write_text(json.dumps(result))
    module, data = load_run(run)
    assert data.num_workers == 0 and module.model is not None
    _, data = load_run(run, data={"num_workers": 1})
    assert data.num_workers == 1


def test_a_run_clears_what_a_killed_write_left_and_no_file_of_its_user(run_dir, tmp_path):
    from diffpool.training import train

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "results.json").unlink()
    left = run / "checkpoints" / ".last.ckpt.x1y2z3.diffpool-tmp"  # a write cut short by kill -9
    left.write_bytes(b"half")
    mine = [run / ".notes.draft.tmp", run / "checkpoints" / ".a.b.tmp"]  # the user's
    for path in mine:
        path.write_bytes(b"the user's")
    train(_resume(run_dir, run))
    assert not left.exists() and (run / "results.json").exists()
    assert all(path.read_bytes() == b"the user's" for path in mine)


@pytest.mark.parametrize("linked", [".hydra", "checkpoints", "logs", "train.log"])
def test_a_run_writes_through_no_link_in_its_directory(run_dir, tmp_path, linked):
    """A run directory copied from elsewhere may link its folders, or the log Hydra appends
    to, outside it: the run refuses it under its lock, before it writes, appends or removes
    anything there (a linked checkpoints/ had its files replaced and deleted)."""
    from diffpool.training import train

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    (other / "results.json").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("best-epoch000.ckpt", ".notes.draft.tmp", "train.log"):
        (elsewhere / name).write_bytes(b"the user's")
    path = other / linked
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    path.symlink_to(elsewhere / "train.log" if linked == "train.log" else elsewhere)
    with pytest.raises(ValueError, match=rf"{re.escape(linked)} is a (symbolic )?link"):
        train(_resume(run_dir, other))
    assert sorted(p.name for p in elsewhere.iterdir()) == [
        ".notes.draft.tmp", "best-epoch000.ckpt", "train.log"]  # fmt: skip
    assert all(p.read_bytes() == b"the user's" for p in elsewhere.iterdir())


def test_predict_takes_the_text_of_results_json_as_text(run_dir, tmp_path, capsys, monkeypatch):
    """The run's seed and model enter diffpool-predict's config (data options interpolate
    them): a ${...} in them stays text, not an interpolation (oc.env reads the environment),
    and a seed that is no int is a named error."""
    from diffpool.cli import predict

    monkeypatch.setenv("DIFFPOOL_SECRET", "123")
    run = tmp_path / "run"
    _crafted_copy(run_dir, run, None, None)
    result = json.loads((run / "results.json").read_text())
    result["config"]["seed"] = "${oc.decode:${oc.env:DIFFPOOL_SECRET}}"
    (run / "results.json").write_text(json.dumps(result))
    code, _, err = _cli(predict.main, [f"run={run}"], capsys)
    assert code == 2 and "config.seed must be an int" in err, err
    result["config"]["seed"] = 0
    result["config"]["model"] = {
        **result["config"]["model"],
        "note": "${oops",
        "env": "${oc.env:HOME}",
    }
    (run / "results.json").write_text(json.dumps(result))
    code, out, err = _cli(predict.main, [f"run={run}"], capsys)
    assert code == 0 and "wrote" in out, err


def test_a_run_from_elsewhere_unpacks_no_data_where_its_file_says(run_dir, tmp_path, capsys):
    """results.json names the data folder of the machine the run was trained on: where it
    does not exist here, predict and viz refuse it (they would unpack the data there) and
    say how to name one."""
    from diffpool.cli import predict, viz

    run = tmp_path / "run"
    _crafted_copy(run_dir, run, None, None)
    result = json.loads((run / "results.json").read_text())
    result["config"]["data"]["root"] = str(tmp_path / "elsewhere" / "deep")
    (run / "results.json").write_text(json.dumps(result))
    for main, args in ((predict.main, [f"run={run}"]), (viz.main, [run])):
        code, _, err = _cli(main, args, capsys)
        assert code == 2 and "does not exist here" in err and "++data.root=PATH" in err, err
    assert not (tmp_path / "elsewhere").exists()
    root = run_dir.parent / "TU"
    code, out, err = _cli(predict.main, [f"run={run}", f"++data.root={root}"], capsys)
    assert code == 0 and "wrote" in out, err


@pytest.mark.parametrize("content", ["list", "tensor", "hyper_parameters"])
def test_a_checkpoint_that_is_no_mapping_is_an_error_naming_it(tmp_path, content):
    from diffpool.training.predict import load_checkpoint

    path = tmp_path / "bad.ckpt"
    data = {"list": [1, 2, 3], "tensor": torch.zeros(2),
            "hyper_parameters": {"hyper_parameters": [1], "state_dict": {}}}[content]  # fmt: skip
    torch.save(data, path)
    with pytest.raises(ValueError, match="not a Lightning checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_a_relative_data_folder_of_a_run_is_made_where_the_run_made_it(run_dir, tmp_path):
    """A dataset that never writes to its root (a user's in-memory class) need not have one:
    a relative root that does not exist passes (it would be made under the working
    directory, as training made it); one outside it does not."""
    from diffpool.training.predict import _check_roots

    results = tmp_path / "results.json"
    _check_roots({"dataset": {"root": "data/pyg"}}, {}, results)
    for root in (str(tmp_path / "gone"), "../gone", "~/surely-not-here-diffpool"):
        with pytest.raises(FileNotFoundError, match="does not exist here"):
            _check_roots({"dataset": {"root": root}}, {}, results)
    _check_roots({"dataset": {"root": "../gone"}}, {"dataset": {"root": "x"}}, results)
