"""The training stack: configs, the LightningModule, run directories, resume, NaN, reports."""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from lightning.pytorch import Callback

from diffpool.models import VARIANTS, DiffPoolNet, data_transform
from diffpool.nn import ENCODERS
from diffpool.training import (
    GraphClassifier,
    NonFiniteLossError,
    RunDirectoryError,
    RunResult,
    TUDataModule,
    train,
)
from diffpool.training.report import collect, curve_spread, write_report
from diffpool.training.run import build, debug_settings, evaluate
from diffpool.utils.provenance import code_label, provenance
from helpers import ROOT

CONF = ROOT / "conf"


def _compose(*overrides: str):
    with initialize_config_module("diffpool.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _elapsed(run_dir: Path) -> list[float]:
    """The ``time/elapsed_s`` column of a run directory's ``history.csv``."""
    with open(run_dir / "history.csv") as handle:
        return [float(r["time/elapsed_s"]) for r in csv.DictReader(handle)]


def _cfg(tmp_path: Path, out: str, *overrides: str):
    """A small, quick MUTAG run writing into tmp_path/out."""
    return _compose(
        "data=mutag",
        f"data.root={tmp_path / 'TU'}",
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model.hidden_channels=16",
        f"output_dir={tmp_path / out}",
        *overrides,
    )


@pytest.fixture(scope="module")
def mutag(tmp_path_factory):
    dm = TUDataModule("MUTAG", root=tmp_path_factory.mktemp("mutag"), batch_size=32)
    dm.setup()
    return dm


def test_config_groups_hold_every_variant_and_encoder():
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(VARIANTS)
    assert {p.stem for p in (CONF / "model" / "encoder").glob("*.yaml")} >= set(ENCODERS)
    assert {p.stem for p in (CONF / "trainer").glob("*.yaml")} == {"cpu", "gpu", "ddp", "ddp_sim"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("encoder", ["sage", "gcn", "gin", "gat", "sum"])
def test_every_model_config_trains_a_step(mutag, variant, encoder):
    flat = VARIANTS[variant][0] is not DiffPoolNet
    levels = [] if flat else ["model.num_levels=2"]
    cfg = _compose(f"model={variant}", f"model/encoder={encoder}", *levels)
    assert cfg.model.variant == variant and cfg.model.encoder == encoder
    module = GraphClassifier(cfg.model, mutag.num_features, mutag.num_classes, mutag.max_num_nodes)
    assert type(module.model) is VARIANTS[variant][0]
    transform = data_transform(cfg.model)
    assert (transform is not None) == (variant == "det")
    graphs = [mutag.dataset[i] for i in range(8)]
    if transform is not None:
        graphs = [transform(g) for g in graphs]
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(graphs)
    out = module(batch)
    loss = torch.nn.functional.cross_entropy(out.logits, batch.y) + out.aux_loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.filterwarnings("ignore:You are trying to .self.log")
def test_steps_skip_the_dense_assignments_and_forward_keeps_them(mutag):
    """The training step asks the model for no dense assignment S (the largest tensor of a
    batch holding one large graph); ``module(batch)`` still returns it, e.g. for plots. A
    user's model whose forward lacks ``return_assignments`` trains as before."""
    cfg = _compose("model=diffpool", "model.num_levels=2")
    module = GraphClassifier(cfg.model, mutag.num_features, mutag.num_classes, mutag.max_num_nodes)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([mutag.dataset[i] for i in range(8)])
    seen = []
    module.model.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append((kwargs, out)), with_kwargs=True
    )
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    kwargs, out = seen[-1]
    assert kwargs["return_assignments"] is False
    assert all(level.s is None for level in out.levels)
    assert all(level.s is not None for level in module(batch).levels)

    own = GraphClassifier(
        {"_target_": "helpers.MeanPoolModel"}, mutag.num_features, mutag.num_classes
    )
    assert torch.isfinite(own.training_step(batch, 0))


def test_every_model_config_holds_its_own_settings_only():
    """A model config has the keys its class takes and no other, so that a sweep override the
    model does not have is refused (``model.ratio=0.1`` with ``model=base``) instead of
    dropped; the encoder keys are shared by every model."""
    import inspect

    shared = set(_compose("model=base").model)
    for variant, (cls, _) in VARIANTS.items():
        keys = set(_compose(f"model={variant}").model) - {"_target_", "variant"}
        assert keys <= set(inspect.signature(cls).parameters), variant
        assert shared - {"readout"} <= keys | {"_target_", "variant"}, variant
    with pytest.raises(Exception, match="Could not override 'model.ratio'"):
        _compose("model=base", "model.ratio=0.1")


def test_variant_configs_cannot_be_contradicted():
    cfg = _compose("model=nolp", "model.link_loss=frobenius")
    with pytest.raises(ValueError, match="variant 'nolp' fixes"):
        GraphClassifier(cfg.model, 7, 2, 28)


@pytest.mark.parametrize("dataset", ["enzymes", "proteins", "dd", "collab", "reddit-multi-12k"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_paper_preset_composes_with_every_dataset_and_model(dataset, variant):
    cfg = _compose("experiment=paper", f"data={dataset}", f"model={variant}")
    assert cfg.model.variant == variant and cfg.data.name.lower() == dataset
    assert cfg.trainer.max_epochs == 1000 and cfg.model.hidden_channels == 64
    assert cfg.model.normalize and cfg.data.batch_size == 20
    assert cfg.model.get("num_levels", 1) == 1
    # the authors' ratio 0.1 for the pooling models; the flat ones have none
    pooling = "ratio" in _compose(f"model={variant}").model
    assert cfg.model.get("ratio") == (0.1 if pooling else None)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_pooling_models_default_ratio_is_the_papers_25_percent(variant):
    """The paper's text: 25% clusters per node (model.ratio=0.25); its table's 0.1 (the
    authors' code) is experiment=paper's, for every model that has a ratio, and a ratio given
    on the command line wins over both."""
    model = _compose(f"model={variant}").model
    if "ratio" not in model:
        assert variant in ("base", "set2set", "sortpool")
        return
    assert model.ratio == 0.25
    assert (CONF / "experiment_model" / f"paper_{variant}.yaml").exists()
    assert _compose("experiment=paper", f"model={variant}").model.ratio == 0.1
    assert _compose("experiment=paper", f"model={variant}", "model.ratio=0.5").model.ratio == 0.5


@pytest.mark.parametrize(
    "option, spellings",
    [
        ("nci1", ["NCI1"]),
        ("enzymes", ["ENZYMES"]),  # a file of conf/data
        ("proteins_full", ["PROTEINS_full", "PROTEINS_FULL"]),  # a file, in mixed case
        ("letter-high", ["Letter-high", "LETTER-HIGH"]),
        ("reddit_threads", ["REDDIT_THREADS"]),
    ],
)
def test_tu_names_work_as_the_collection_spells_them_and_in_upper_case(option, spellings):
    """``data=NCI1`` is ``data=nci1``: the same config, and a sweep's job of it has the same
    directory (a finished job is skipped whichever spelling started it)."""
    from diffpool.cli.train import path_safe

    canonical = _compose(f"data={option}")
    for name in spellings:
        assert _compose(f"data={name}") == canonical
        assert path_safe(f"data.fold=3,data={name},model/encoder=gcn") == (
            f"data.fold=3,data={option},model.encoder=gcn"
        )


def test_a_sweep_job_with_many_overrides_gets_a_name_the_file_system_takes(tmp_path):
    """Past 255 bytes a job's folder is the start of its overrides and a digest of them all:
    it can be made, and two jobs stay apart."""
    from diffpool.cli.train import path_safe

    long = ",".join(f"model.setting_{i}={i}" for i in range(20))
    names = {path_safe(long), path_safe(long.replace("=19", "=20"))}
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)
    for name in names:
        (tmp_path / name).mkdir()
    # a name the file system takes is kept whole: earlier sweeps find their jobs again
    fits = ",".join(f"model.setting_{i}={i}" for i in range(12))
    assert 200 < len(fits) <= 255 and path_safe(fits) == fits


def test_the_data_options_are_each_tu_name_in_three_spellings_at_most():
    """The aliases are the collection's spelling and upper case, where either differs from
    the lower-case option: no other spelling, and none for the other data configs."""
    import diffpool.conf
    from hydra.core.global_hydra import GlobalHydra

    from diffpool.datasets.names import KNOWN, OGB_MOLECULES

    with initialize_config_module("diffpool.conf", version_base="1.3"):
        options = set(GlobalHydra.instance().config_loader().get_group_options("data"))
    files = {p.stem for p in (CONF / "data").glob("*.yaml")}
    tu = {spelling for n in KNOWN for spelling in (n.lower(), n, n.upper())}
    assert options == files | tu | set(OGB_MOLECULES)
    assert set(diffpool.conf.ALIASES) == tu - {n.lower() for n in KNOWN}
    assert diffpool.conf.data_option("PROTEINS_FULL") == "proteins_full"


def _errica_folds(num_graphs: int, folds: int) -> list[dict]:
    """An Errica-style split file's content: fold f tests 10 graphs, validates the next 10."""
    content = []
    for f in range(folds):
        test, val = list(range(20 * f, 20 * f + 10)), list(range(20 * f + 10, 20 * f + 20))
        train = [i for i in range(num_graphs) if i not in test and i not in val]
        content.append({"test": test, "model_selection": [{"train": train, "validation": val}]})
    return content


def test_a_tu_dataset_by_name_takes_a_split_file(tmp_path):
    """``data=mutag data.split=file data.split_file=...`` (any TU dataset by name, as with
    ``data=pyg``): the file's fold and model-selection split instead of the k-fold CV, in the
    config, in Python and in the run's results."""
    from hydra.utils import instantiate

    folds = _errica_folds(188, 2)
    file = tmp_path / "mutag_splits.json"
    file.write_text(json.dumps(folds))
    cfg = _cfg(tmp_path, "run", "data.split=file", f"data.split_file={file}", "data.fold=1",
               "trainer.max_epochs=1")  # fmt: skip
    assert (cfg.data.split, cfg.data.inner) == ("file", 0)
    data = instantiate(cfg.data)
    data.setup()
    assert data.split.test.tolist() == folds[1]["test"]
    assert data.split.val.tolist() == folds[1]["model_selection"][0]["validation"]
    assert data.split.train.tolist() == folds[1]["model_selection"][0]["train"]
    assert data.num_folds == 2 and "split file" in data.describe()
    result = train(cfg)
    assert (result.dataset, result.fold, result.num_folds) == ("MUTAG", 1, 2)
    assert result.config["data"]["split_file"] == str(file)
    # in Python, and one {train, val, test} object
    plain = tmp_path / "one_split.json"
    plain.write_text(json.dumps({"train": list(range(20, 188)), "val": list(range(10, 20)),
                                 "test": list(range(10))}))  # fmt: skip
    python = TUDataModule("mutag", tmp_path / "TU", split="file", split_file=plain)
    python.setup()
    assert python.split.test.tolist() == list(range(10)) and len(python.split.train) == 168
    assert python.hparams.split_file == str(plain)  # plain data: checkpoints hold it
    with pytest.raises(ValueError, match="split must be 'kfold' or 'file'"):
        TUDataModule("MUTAG", tmp_path / "TU", split="dataset")
    with pytest.raises(ValueError, match="split='file' needs split_file"):
        TUDataModule("MUTAG", tmp_path / "TU", split="file")


def test_a_run_without_validation_set_has_the_paper_protocol_only(tmp_path):
    """data.val_ratio=0 (the authors' split): the test fold is logged as heldout every epoch,
    nothing is selected on validation, and a callback that watches val/* is a clear error."""
    cfg = _cfg(tmp_path, "paper_split", "data.val_ratio=0", "callbacks=no_validation")
    stored = train(cfg)
    assert stored.status == "finished" and stored.epochs == 3 and not stored.has_validation
    assert stored.fair.test is None and stored.fair.val is None
    curve = stored.test_curve
    assert len(curve) == 3 and all(0.0 <= a <= 1.0 for a in curve)
    with open(tmp_path / "paper_split" / "history.csv") as handle:
        columns = set(next(csv.DictReader(handle)))
    assert "heldout/acc" in columns and not any(c.startswith("val/") for c in columns)
    assert (tmp_path / "paper_split" / "checkpoints" / "last.ckpt").exists()
    with pytest.raises(ValueError, match=r"no validation set .*ModelCheckpoint\(monitor="):
        train(_cfg(tmp_path, "watching", "data.val_ratio=0"))


@pytest.mark.parametrize(
    ("setting", "limited"),
    [
        ("+trainer.limit_train_batches=1", True),  # an int is a count: one batch
        ("+trainer.limit_train_batches=1.0", False),  # a float a fraction: all of them
        ("+trainer.limit_train_batches=0.5", True),
        ("+trainer.limit_val_batches=100", True),
        ("+trainer.fast_dev_run=0", False),
        ("+trainer.fast_dev_run=2", True),
        ("+trainer.overfit_batches=0.0", False),
        ("+trainer.overfit_batches=3", True),
    ],
)
def test_a_run_with_a_batch_limit_is_a_debugging_run(tmp_path, setting, limited):
    """Lightning reads an integer limit as a number of batches, a float as a fraction: a run
    limited to a number of batches, or to a fraction below 1, writes no results.json."""
    assert bool(debug_settings(_cfg(tmp_path, "run", setting))) == limited


def test_a_one_batch_run_writes_no_results(tmp_path):
    debug = ("+trainer.limit_train_batches=1", "trainer.max_epochs=1")
    stored = train(_cfg(tmp_path, "one", *debug))
    assert stored.status == "debug" and not (tmp_path / "one" / "results.json").exists()
    # its checkpoints are a debugging run's, not an unfinished one's, and overwrite=true goes on
    with pytest.raises(RunDirectoryError, match=r"debugging run \(trainer.limit_train_batches=1\)"):
        train(_cfg(tmp_path, "one", *debug))
    assert train(_cfg(tmp_path, "one", *debug, "overwrite=true")).status == "debug"


def test_train_writes_results_and_never_overwrites_silently(tmp_path):
    cfg = _cfg(tmp_path, "run")
    results = train(cfg)
    out = tmp_path / "run"
    stored = json.loads((out / "results.json").read_text())
    assert stored["schema"] == RunResult.from_json(stored).schema == 2
    assert RunResult.load(out) == results
    assert stored["status"] == "finished" and stored["epochs"] == 3
    assert stored["dataset"] == "MUTAG" and stored["model"] == "diffpool"
    fair = stored["fair"]
    # the checkpointed best epoch, retested, gives the test fold's accuracy of that epoch
    assert fair["val"] == max(stored["val_curve"])
    assert fair["test"] == pytest.approx(stored["test_curve"][fair["best_epoch"]])
    assert Path(fair["checkpoint"]).exists() and (out / "checkpoints" / "last.ckpt").exists()
    # the run's files, and no lock left behind (run.lock, the dataset's .MUTAG.lock)
    files = ["checkpoints", "history.csv", "logs", "results.json"]
    assert sorted(p.name for p in out.iterdir()) == files
    assert sorted(p.name for p in (tmp_path / "TU").iterdir()) == ["MUTAG"]
    with open(out / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert {"train/loss", "val/acc", "heldout/acc", "train/link_loss_l0"} <= set(history[0])
    elapsed = [float(r["time/elapsed_s"]) for r in history]
    assert 0 < elapsed[0] < elapsed[1] < elapsed[2] <= stored["wall_time_s"]
    assert results.config == stored["config"]
    # the code and threads that ran, as provenance() says of this installation
    assert stored["provenance"] == provenance()

    # the same config again: skipped, nothing rewritten
    mtime = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert train(cfg).wall_time_s == stored["wall_time_s"]
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    # ... also where the data lives elsewhere (a run restored on another machine)
    moved = _cfg(tmp_path, "run", f"data.root={tmp_path / 'elsewhere'}")
    assert train(moved).wall_time_s == stored["wall_time_s"]
    assert not (tmp_path / "elsewhere").exists()

    # another config in the same directory: refused
    with pytest.raises(RunDirectoryError, match="another config"):
        train(_cfg(tmp_path, "run", "model.ratio=0.5"))
    # unless asked to overwrite: the earlier files are moved aside, not deleted, with what
    # diffpool-predict made of its checkpoints (and logs the second run under the same name)
    (out / "predictions-test.csv").write_text("graph_id\n")
    train(_cfg(tmp_path, "run", "model.ratio=0.5", "overwrite=true", "logger=csv"))
    replaced = list(out.glob("replaced-*"))
    assert len(replaced) == 1 and (replaced[0] / "results.json").exists()
    assert (replaced[0] / "predictions-test.csv").exists()
    assert not (out / "predictions-test.csv").exists()
    # the logger defines no run: the finished run is skipped whatever logs it
    assert train(_cfg(tmp_path, "run", "model.ratio=0.5", "logger=none")).config["logger"]
    assert json.loads((out / "results.json").read_text())["config"]["model"]["ratio"] == 0.5


def test_results_name_the_code_the_run_started_with(tmp_path, monkeypatch):
    """The code is the one imported when the run starts: a commit made while it trains must
    not be recorded as what ran."""
    import diffpool.training.run as run_module

    calls = []

    def fake_provenance():
        calls.append(len(calls))
        return {"commit": f"commit-{len(calls)}"}

    monkeypatch.setattr(run_module, "provenance", fake_provenance)
    train(_cfg(tmp_path, "run", "trainer.max_epochs=1"))
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["provenance"] == {"commit": "commit-1"} and len(calls) == 1


def test_checkpoint_reloads_the_model_alone(tmp_path):
    train(_cfg(tmp_path, "run", "trainer.max_epochs=1", "model=det"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = GraphClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert module.model.assignment == "det"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def _interrupted_at_epoch_2(tmp_path: Path, out: str, *overrides: str) -> None:
    """A 3-epoch run into tmp_path/out, stopped by Ctrl-C at the start of its third epoch."""
    interrupt = [
        "+callbacks.interrupt._target_=helpers.InterruptAtEpoch",
        "+callbacks.interrupt.epoch=2",
    ]
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            train(_cfg(tmp_path, out, *overrides, *interrupt))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after the first


def test_ctrl_c_leaves_a_checkpoint_and_resume_continues_the_same_run(tmp_path):
    train(_cfg(tmp_path, "straight", "model.dropout=0.2"))
    _interrupted_at_epoch_2(tmp_path, "stopped", "model.dropout=0.2")
    out = tmp_path / "stopped"
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "results.json").exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    with pytest.raises(RunDirectoryError, match="unfinished run: pass resume=true"):
        train(_cfg(tmp_path, "stopped", "model.dropout=0.2"))
    before = _elapsed(out)
    assert len(before) == 2 and 0 < before[0] < before[1]
    t0 = time.time()
    resumed = train(_cfg(tmp_path, "stopped", "model.dropout=0.2", "resume=true"))
    this_process = time.time() - t0
    after = _elapsed(out)
    assert after[:2] == pytest.approx(before) and after[2] > before[1]
    # the wall time counts the restored epochs' fitting time too, not only this process's:
    # at least the last epoch's elapsed fitting time (restored + this process's), at most
    # the restored time plus this whole process (no timing ratio, so no flaky bound)
    assert after[2] - 0.01 <= resumed.wall_time_s <= before[1] + this_process + 0.01
    straight = RunResult.load(tmp_path / "straight")
    assert resumed.epochs == straight.epochs == 3
    assert resumed.val_curve == pytest.approx(straight.val_curve, abs=1e-6)
    assert resumed.test_curve == pytest.approx(straight.test_curve, abs=1e-6)
    assert resumed.fair.test == pytest.approx(straight.fair.test)


def test_resume_continues_a_run_only_with_the_config_that_wrote_its_checkpoint(tmp_path):
    """Another fold or learning rate on top of a run's weights would be a run that never was
    (the fold's test graphs trained on): refused, naming what differs; the directory keeps
    its files."""
    _interrupted_at_epoch_2(tmp_path, "stopped")
    out = tmp_path / "stopped"
    written = (out / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(RunDirectoryError, match=r"another config \(data.fold, module.optimizer.lr"):
        train(_cfg(tmp_path, "stopped", "resume=true", "data.fold=3", "module.optimizer.lr=0.05"))
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == written
    assert train(_cfg(tmp_path, "stopped", "resume=true")).epochs == 3


def test_resume_with_fewer_epochs_than_the_checkpoint_holds_is_refused(tmp_path):
    """An unfinished run whose last.ckpt holds epochs 0 and 1, resumed with
    ``trainer.max_epochs=1``: Lightning trains no more and the run ended with 2 epochs under
    a config of 1 (its best epoch 1 outside it). Refused; 2 epochs continue it."""
    _interrupted_at_epoch_2(tmp_path, "stopped")
    with pytest.raises(RunDirectoryError, match=r"after epoch 1 .*trainer.max_epochs=1 would"):
        train(_cfg(tmp_path, "stopped", "resume=true", "trainer.max_epochs=1"))
    assert not (tmp_path / "stopped" / "results.json").exists()
    assert train(_cfg(tmp_path, "stopped", "resume=true", "trainer.max_epochs=2")).epochs == 2


def test_resume_does_not_take_other_early_stopping_settings(tmp_path):
    """EarlyStopping restores its patience (and count and best) from the checkpoint: another
    patience on resume ran with the old one while results.json stored the new. Refused, as
    adding or removing early stopping (a straight run may have stopped elsewhere)."""
    stop = ("callbacks=early_stopping", "callbacks.early_stopping.patience=50")
    _interrupted_at_epoch_2(tmp_path, "stopped", *stop)
    for changed in (["callbacks=early_stopping", "callbacks.early_stopping.patience=1"], []):
        with pytest.raises(RunDirectoryError, match=r"another config \(callbacks.early_stopping"):
            train(_cfg(tmp_path, "stopped", "resume=true", *changed))
    assert train(_cfg(tmp_path, "stopped", "resume=true", *stop)).epochs == 3


def test_resume_of_a_checkpoint_without_its_run_config_says_it_cannot_be_checked(tmp_path, caplog):
    """A checkpoint written before resume compared configs resumes as before, with a
    warning that its settings cannot be checked."""
    from diffpool.training.callbacks import RunConfig

    _interrupted_at_epoch_2(tmp_path, "stopped")
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    del checkpoint[RunConfig.KEY]
    torch.save(checkpoint, last)
    with caplog.at_level(logging.WARNING, logger="diffpool.training.run"):
        assert train(_cfg(tmp_path, "stopped", "resume=true")).epochs == 3
    assert "stores no run config" in caplog.text


def test_a_moved_run_directory_resumes_with_its_best_checkpoint(tmp_path, recwarn):
    """Checkpoints store absolute paths: a run directory moved (or copied to another machine)
    before resuming must still know its best epoch so far, and keep a single best file."""
    train(_cfg(tmp_path, "straight"))
    _interrupted_at_epoch_2(tmp_path, "stopped")
    shutil.move(tmp_path / "stopped", tmp_path / "moved")
    resumed = train(_cfg(tmp_path, "moved", "resume=true"))
    straight = RunResult.load(tmp_path / "straight")
    assert resumed.val_curve == pytest.approx(straight.val_curve, abs=1e-6)
    assert resumed.fair.best_epoch == straight.fair.best_epoch
    assert resumed.fair.test == pytest.approx(straight.fair.test)
    checkpoints = tmp_path / "moved" / "checkpoints"
    assert Path(resumed.fair.checkpoint).parent == checkpoints
    # save_top_k=1: the best file of the epochs before the move was replaced or kept, once
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]


def test_a_finished_run_continues_elsewhere_to_more_epochs_as_if_run_straight(tmp_path):
    """The checkpoints and history of a finished 2-epoch run, copied into a new directory,
    continue to 3 epochs and end as a 3-epoch run from the start (both protocols, history and
    clock)."""
    straight = train(_cfg(tmp_path, "straight", "model.dropout=0.2"))
    train(_cfg(tmp_path, "short", "model.dropout=0.2", "trainer.max_epochs=2"))
    longer = tmp_path / "longer"
    shutil.copytree(tmp_path / "short" / "checkpoints", longer / "checkpoints")
    shutil.copyfile(tmp_path / "short" / "history.csv", longer / "history.csv")
    continued = train(_cfg(tmp_path, "longer", "model.dropout=0.2", "resume=true"))
    assert continued.config == straight.config and continued.epochs == 3
    assert continued.val_curve == pytest.approx(straight.val_curve, abs=1e-6)
    assert continued.test_curve == pytest.approx(straight.test_curve, abs=1e-6)
    assert continued.fair.best_epoch == straight.fair.best_epoch
    assert continued.fair.test == pytest.approx(straight.fair.test)
    assert Path(continued.fair.checkpoint).parent == longer / "checkpoints"
    assert _elapsed(longer)[:2] == pytest.approx(_elapsed(tmp_path / "short"))
    # the clock counts the restored epochs' fitting (the short run's wall time also holds its
    # own setup and test, which the continued run did not repeat: no bound by it)
    assert continued.wall_time_s >= _elapsed(tmp_path / "short")[-1]
    # the shorter run is left as it was
    assert json.loads((tmp_path / "short" / "results.json").read_text())["epochs"] == 2


class DieBetweenBestAndLast(Callback):
    """Stands in for ``kill -9`` after ``best-epoch<epoch>.ckpt`` is written and before that
    epoch's ``last.ckpt`` is: the run stops while the second checkpoint of ``epoch`` is being
    made (nothing of it is written)."""

    def __init__(self, epoch: int):
        self.epoch, self.saves = epoch, 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.current_epoch == self.epoch:
            self.saves += 1
            if self.saves == 2:
                raise RuntimeError("killed")


def test_a_finished_run_continues_in_place_to_more_epochs_with_resume(tmp_path):
    """resume=true with more epochs continues a finished run in its own directory (the docs'
    "aside from trainer.max_epochs"), ending as a run that went straight there; its earlier
    results.json moves to replaced-<time>/. Without resume=true, or with no more epochs, the
    directory is refused; the error says resume=true where it would continue."""
    straight = train(_cfg(tmp_path, "straight", "model.dropout=0.2"))
    train(_cfg(tmp_path, "run", "model.dropout=0.2", "trainer.max_epochs=2"))
    with pytest.raises(RunDirectoryError, match="resume=true continues it"):
        train(_cfg(tmp_path, "run", "model.dropout=0.2"))
    with pytest.raises(RunDirectoryError, match="another config"):
        train(_cfg(tmp_path, "run", "model.dropout=0.2", "trainer.max_epochs=1", "resume=true"))
    continued = train(_cfg(tmp_path, "run", "model.dropout=0.2", "resume=true"))
    assert continued.epochs == 3 and continued.config == straight.config
    assert continued.val_curve == pytest.approx(straight.val_curve, abs=1e-6)
    assert continued.fair.test == pytest.approx(straight.fair.test)
    assert RunResult.load(tmp_path / "run").epochs == 3
    (replaced,) = (tmp_path / "run").glob("replaced-*")
    assert RunResult.load(replaced).epochs == 2
    assert [g.runs[0].epochs for g in collect(tmp_path / "run")[0]] == [3]
    # without its last.ckpt a finished run cannot continue (it would train from scratch)
    train(_cfg(tmp_path, "no_last", "model.dropout=0.2", "trainer.max_epochs=2"))
    (tmp_path / "no_last" / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(RunDirectoryError, match="another config"):
        train(_cfg(tmp_path, "no_last", "model.dropout=0.2", "resume=true"))
    assert RunResult.load(tmp_path / "no_last").epochs == 2


def test_an_early_stopped_run_does_not_continue_to_more_epochs(tmp_path):
    """A finished run that early stopping ended before its max_epochs, continued with more:
    Lightning does not restore the stop, and the run trained an epoch more than a straight
    run with those epochs (which stops where it did). Refused, saying why."""
    stop = (  # train/loss falls: no epoch after the first is better
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.monitor=train/loss",
        "callbacks.early_stopping.mode=max",
    )
    assert train(_cfg(tmp_path, "run", *stop)).epochs == 2
    with pytest.raises(RunDirectoryError, match="stopped before its trainer.max_epochs, after 2"):
        train(_cfg(tmp_path, "run", *stop, "trainer.max_epochs=5", "resume=true"))
    assert RunResult.load(tmp_path / "run").epochs == 2


def test_a_run_killed_between_its_best_and_last_checkpoint_resumes_to_the_same_files(tmp_path):
    """The best epoch's checkpoint is written, the run dies before its last.ckpt: resumed, it
    retrains that epoch and ends with the files of a run that never stopped (one best file,
    not ``best-epoch002.ckpt`` and ``best-epoch002-v1.ckpt``). Every epoch is the best here
    (the checkpoint monitors ``step``)."""
    every_epoch = ("callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=max")
    straight = train(_cfg(tmp_path, "straight", *every_epoch))
    die = [f"+callbacks.die._target_={__name__}.DieBetweenBestAndLast", "+callbacks.die.epoch=2"]
    with pytest.raises(RuntimeError, match="killed"):
        train(_cfg(tmp_path, "killed", *every_epoch, *die))
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert (checkpoints / "best-epoch002.ckpt").exists()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1
    resumed = train(_cfg(tmp_path, "killed", *every_epoch, "resume=true"))
    files = sorted(p.name for p in checkpoints.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir())
    assert files == ["best-epoch002.ckpt", "last.ckpt"]
    # a checkpoint of step, not of val/acc: not the fair protocol's epoch, so no fair test
    assert resumed.fair.checkpoint is None is straight.fair.checkpoint
    assert resumed.fair.test is None and resumed.fair.best_epoch >= 0


def test_the_fair_test_is_the_checkpoint_of_the_epoch_it_reports(tmp_path):
    """The fair protocol reports the best val/acc epoch: it tests the weights a checkpoint of
    val/acc kept, never the last epoch's or another metric's best."""
    kept = train(_cfg(tmp_path, "acc"))
    assert Path(kept.fair.checkpoint).name == f"best-epoch{kept.fair.best_epoch:03d}.ckpt"
    assert kept.fair.best_epoch != 1
    for out, overrides in (
        ("loss", ["callbacks.model_checkpoint.monitor=val/loss",
                  "callbacks.model_checkpoint.mode=min"]),
        ("none", ["callbacks=no_validation"]),
        # a checkpoint every second epoch keeps epoch 1 only: not the best epoch
        ("every2", ["+callbacks.model_checkpoint.every_n_epochs=2"]),
    ):  # fmt: skip
        result = train(_cfg(tmp_path, out, *overrides))
        assert result.fair.test is None and result.fair.checkpoint is None
        assert result.fair.best_epoch == kept.fair.best_epoch
        assert "no checkpoint of the best validation epoch" in result.summary()[0]


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    poison = ["+callbacks.poison._target_=helpers.PoisonAtEpoch", "+callbacks.poison.epoch=1"]
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 1"):
        train(_cfg(tmp_path, "nan", *poison))
    failed = json.loads((tmp_path / "nan" / "failed.json").read_text())
    assert "NonFiniteLossError" in failed["error"]
    assert not (tmp_path / "nan" / "results.json").exists()


def test_a_diverging_run_stops_at_its_first_non_finite_validation_loss(tmp_path):
    """Weights gone NaN between training and validation: the run stops in that validation
    (not an epoch later), and the last checkpoint is still the previous, finite epoch's."""
    poison = [
        "+callbacks.poison._target_=helpers.PoisonAtEpoch",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.when=validation",
    ]
    with pytest.raises(NonFiniteLossError, match="validation loss is nan at epoch 1"):
        train(_cfg(tmp_path, "nan", *poison))
    last = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert "NonFiniteLossError" in (tmp_path / "nan" / "failed.json").read_text()


def test_a_checkpoint_never_holds_non_finite_tensors(tmp_path):
    """Infinite batch-norm statistics leave the outputs finite but the state poisoned: no
    checkpoint is written with them, and resume=true would find the earlier, finite one."""
    poison = [
        "+callbacks.poison._target_=helpers.PoisonAtEpoch",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.when=validation",
        "+callbacks.poison.what=running_var",
    ]
    with pytest.raises(NonFiniteLossError, match=r"not finite: .*running_var"):
        train(_cfg(tmp_path, "inf", *poison))
    for path in (tmp_path / "inf" / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 0, path
        assert all(torch.isfinite(t).all() for t in state["state_dict"].values()), path


def test_a_full_disk_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    """The disk fills up while the third checkpoint is written (after 100 bytes): the run
    fails, and what is left in checkpoints/ is the earlier checkpoints, whole, and no
    temporary file. (Lightning alone writes a checkpoint into the system's temp dir and moves
    it in: across disks a copy, which a full disk cuts short; both ways are cut here.)"""
    checkpoints = tmp_path / "full" / "checkpoints"
    writes, real_save, real_move = [], torch.save, shutil.move

    def disk_full(target) -> bool:
        if Path(target).parent != checkpoints:
            return False
        writes.append(target)
        return len(writes) > 2

    def save(obj, f, *args, **kwargs):  # into an open file (not Lightning's memory buffer)
        if hasattr(f, "name") and disk_full(f.name):
            f.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", f.name)
        return real_save(obj, f, *args, **kwargs)

    def move(src, dst, *args, **kwargs):  # from the temp dir, as a copy across disks
        if disk_full(dst):
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_move(src, dst, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "move", move)
    with pytest.raises(OSError, match="No space left on device"):
        train(_cfg(tmp_path, "full"))
    assert len(writes) == 3
    left = sorted(p.name for p in checkpoints.iterdir())
    assert "last.ckpt" in left and all(name.endswith(".ckpt") for name in left), left
    for name in left:  # whole: they load, and last.ckpt is still the first epoch's
        assert torch.load(checkpoints / name, weights_only=True)["epoch"] == 0, name
    assert "OSError" in json.loads((tmp_path / "full" / "failed.json").read_text())["error"]


def test_two_runs_in_one_directory_at_once_are_refused(tmp_path):
    """A run holds a lock on its directory: a second one started there meanwhile is refused
    (it neither crashes the first nor replaces its results)."""
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / "run.lock")):  # another run holds the directory
        with pytest.raises(RunDirectoryError, match="another run is using"):
            train(_cfg(tmp_path, "run", "trainer.max_epochs=1"))
    assert not (out / "results.json").exists() and not (out / "failed.json").exists()
    train(_cfg(tmp_path, "run", "trainer.max_epochs=1"))  # free again
    assert (out / "results.json").exists() and not (out / "run.lock").exists()


def test_report_aggregates_folds_under_both_protocols(tmp_path):
    sweep = tmp_path / "sweep"
    for variant in ("diffpool", "base"):
        for fold in (0, 1):
            train(
                _cfg(
                    tmp_path,
                    f"sweep/{variant}-{fold}",
                    f"model={variant}",
                    f"data.fold={fold}",
                    "trainer.max_epochs=2",
                )
            )
    (sweep / "broken").mkdir()
    (sweep / "broken" / "failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
    paths = write_report(sweep)
    text = paths["md"].read_text()
    assert "model.variant=base" in text and "model.variant=diffpool" in text
    assert "ValueError: boom" in text
    with open(paths["csv"]) as handle:
        rows = {r["configuration"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {
        "model.variant=base, model.readout=mean",
        "model.variant=diffpool, model.readout=max",
    }
    row = rows["model.variant=diffpool, model.readout=max"]
    runs = [RunResult.load(sweep / f"diffpool-{f}") for f in (0, 1)]
    fair = [r.fair.test for r in runs]
    assert int(row["folds"]) == 2 and row["metric"] == "acc"
    assert row["code"] == code_label(runs[0].provenance) and "| " + row["code"] + " |" in text
    assert float(row["fair_test_mean"]) == pytest.approx(sum(fair) / 2)
    curves = torch.tensor([r.test_curve for r in runs])
    best = int(curves.mean(0).argmax())
    assert int(row["paper_best_epoch"]) == best
    assert float(row["paper_test_mean"]) == pytest.approx(float(curves.mean(0)[best]))
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups, _ = collect(sweep)
    group = next(g for g in groups if g.label.startswith("model.variant=diffpool"))
    expected = torch.tensor([r.val_curve for r in runs]).mean(0)
    assert curve_spread(group)["val/acc"][0].tolist() == pytest.approx(expected.tolist())


def test_scheduler_from_config_steps_every_epoch(tmp_path):
    step_lr = "{_target_:torch.optim.lr_scheduler.StepLR,step_size:1,gamma:0.5}"
    train(_cfg(tmp_path, "run", "trainer.max_epochs=2", f"module.scheduler={step_lr}"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.001 / 4)
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2


def test_a_plateau_schedulers_mode_auto_is_the_tasks_direction(mutag):
    """ReduceLROnPlateau watching val/acc with its default mode "min" would lower the
    learning rate as accuracy improves: ``mode: auto`` takes the task's direction."""
    spec = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "auto"}
    cfg = _compose("model=base")
    module = GraphClassifier(cfg.model, mutag.num_features, mutag.num_classes, scheduler=spec)
    scheduler = module.configure_optimizers()["lr_scheduler"]
    assert (scheduler["scheduler"].mode, scheduler["monitor"]) == ("max", "val/acc")
    assert module.hparams.scheduler["mode"] == "auto"  # the checkpoint keeps what was asked


def test_mode_auto_is_the_direction_of_the_metric_watched(tmp_path, mutag):
    """A callback or plateau scheduler set to watch val/loss keeps ``mode: auto``: it is
    "min" (it was the task's "max": the checkpoint kept the epoch of the highest validation
    loss, early stopping stopped as the loss stopped rising); a metric of unknown direction
    is an error that asks for the mode."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from diffpool.training.run import build

    loss = "val/loss"
    cfg = _cfg(tmp_path, "run", "callbacks=early_stopping",
               f"callbacks.early_stopping.monitor={loss}",
               f"callbacks.model_checkpoint.monitor={loss}")  # fmt: skip
    trainer = build(cfg, tmp_path / "run")[2]
    watching = [c for c in trainer.callbacks if isinstance(c, (EarlyStopping, ModelCheckpoint))
                and c.monitor]  # fmt: skip
    assert [(c.monitor, c.mode) for c in watching] == [(loss, "min")] * 2
    spec = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "auto"}
    for monitor, mode in ((loss, "min"), ("val/link_loss_l0", "min"), ("val/acc", "max")):
        module = GraphClassifier(_compose("model=base").model, mutag.num_features, 2,
                                 scheduler=spec, scheduler_monitor=monitor)  # fmt: skip
        assert module.configure_optimizers()["lr_scheduler"]["scheduler"].mode == mode
    odd = _cfg(tmp_path, "odd", "callbacks.model_checkpoint.monitor=val/my_score")
    with pytest.raises(ValueError, match="give mode: max or mode: min"):
        build(odd, tmp_path / "odd")


def test_early_stopping_is_a_callbacks_option(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from diffpool.training.run import build

    cfg = _cfg(tmp_path, "run", "callbacks=early_stopping")
    targets = {c._target_.rsplit(".", 1)[1] for c in cfg.callbacks.values()}
    assert targets == {"ModelCheckpoint", "EarlyStopping"}
    assert len(cfg.callbacks) == 3 and cfg.callbacks.early_stopping.monitor == "auto"
    # auto: the task's selection metric in its direction (MUTAG: multiclass, val/acc, max)
    trainer = build(cfg, tmp_path / "run")[2]
    stop = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    best = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor)
    assert (stop.monitor, stop.mode, best.monitor, best.mode) == (
        "val/acc",
        "max",
        "val/acc",
        "max",
    )


@pytest.mark.parametrize(
    "launcher, plugin, target",
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
    ],
)
def test_launchers_are_configs(launcher, plugin, target):
    pytest.importorskip(plugin, reason="needs the launchers extra")
    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_threads_is_a_setting_of_the_run_not_of_its_identity(tmp_path):
    """``threads`` sets torch's intra-op threads for the job (recorded in its provenance); a
    finished run is the same run whatever thread count a rerun asks for."""
    before = torch.get_num_threads()
    try:
        result = train(_cfg(tmp_path, "run", "trainer.max_epochs=1", "threads=2"))
        assert result.provenance["torch_threads"] == 2 and "threads" not in result.config
        again = train(_cfg(tmp_path, "run", "trainer.max_epochs=1", "threads=1"))
        assert again.wall_time_s == result.wall_time_s  # skipped: the same run
    finally:
        torch.set_num_threads(before)


def test_overwrite_moves_the_pictures_of_the_earlier_run_with_it(tmp_path):
    """``overwrite=true`` moves diffpool-viz's ``pooling-<graph>.png`` of the earlier run's
    checkpoint aside with it, as it does diffpool-predict's tables: it stayed beside the new
    run's files as if it showed them."""
    train(_cfg(tmp_path, "run", "trainer.max_epochs=1"))
    (tmp_path / "run" / "pooling-0.png").write_bytes(b"the earlier run's picture")
    (tmp_path / "run" / "predictions-test.csv").write_text("graph_id\n")
    train(_cfg(tmp_path, "run", "trainer.max_epochs=1", "model.dropout=0.1", "overwrite=true"))
    assert not list((tmp_path / "run").glob("pooling-*")) and not list(
        (tmp_path / "run").glob("predictions-*")
    )
    (replaced,) = (tmp_path / "run").glob("replaced-*")
    assert (replaced / "pooling-0.png").read_bytes() == b"the earlier run's picture"
    assert (replaced / "predictions-test.csv").is_file()


def test_train_and_evaluate_write_every_file_into_the_directory_they_are_given(
    tmp_path, monkeypatch
):
    """``train(cfg, output_dir)`` runs in ``output_dir``: the checkpoints and logs too (they
    were written to the config's ``output_dir``, results.json and history.csv apart from
    them); a config composed without Hydra's runtime (no ``output_dir`` of its own) trains
    as well. ``evaluate(cfg, output_dir)`` the same."""
    monkeypatch.chdir(tmp_path)
    composed = _compose(
        "data=mutag", f"data.root={tmp_path / 'TU'}", "trainer.max_epochs=1",
        "model.hidden_channels=16",
    )  # fmt: skip
    result = train(composed, "given")
    names = {p.name for p in (tmp_path / "given").iterdir()}
    assert {"results.json", "history.csv", "checkpoints", "logs"} <= names
    assert Path(result.fair.checkpoint).parent == tmp_path / "given" / "checkpoints"
    other = _cfg(tmp_path, "configured", "trainer.max_epochs=1")
    train(other, tmp_path / "elsewhere")
    assert not (tmp_path / "configured").exists()
    assert (tmp_path / "elsewhere" / "checkpoints" / "last.ckpt").is_file()
    evaluated = _compose(
        "data=mutag", f"data.root={tmp_path / 'TU'}", "train=false",
        f"ckpt_path={result.fair.checkpoint}",
    )  # fmt: skip
    assert evaluate(evaluated, "eval")["metrics"]["test/acc"] == pytest.approx(result.fair.test)
    assert (tmp_path / "eval" / "eval.json").is_file()
    trainer = build(composed, tmp_path / "built")[2]
    assert trainer.default_root_dir == str(tmp_path / "built")
    assert {c.dirpath for c in trainer.checkpoint_callbacks} == {
        str(tmp_path / "built" / "checkpoints")
    }


def test_edge_features_asked_for_with_an_encoder_without_them_is_an_error(tmp_path):
    """``data.edge_features=true`` with sage is the ValueError that ``edge_dim=`` with sage is
    in Python (it was a log line, and the edge labels were left out); gine takes them."""
    with pytest.raises(ValueError, match="encoder 'sage' takes no edge features"):
        train(_cfg(tmp_path, "sage", "data.edge_features=true", "model/encoder=sage"))
    assert not (tmp_path / "sage").exists()  # a run that could not be set up leaves nothing
    result = train(
        _cfg(tmp_path, "gine", "data.edge_features=true", "model/encoder=gine",
             "trainer.max_epochs=1")
    )  # fmt: skip
    assert result.config["data"]["edge_features"] is True


def test_epochs_without_validation_have_no_validation_figures(tmp_path):
    """``check_val_every_n_epoch=2``: Lightning keeps the last validation's values in
    ``callback_metrics``; the history and the curves leave the epochs between empty."""
    result = train(_cfg(tmp_path, "every2", "+trainer.check_val_every_n_epoch=2"))
    assert [math.isnan(v) for v in result.val_curve] == [True, False, True]
    assert [math.isnan(v) for v in result.test_curve] == [True, False, True]
    assert result.fair.best_epoch == 1


def test_a_run_validating_every_second_epoch_keeps_every_epoch_on_resume(tmp_path):
    """``check_val_every_n_epoch=2``: ``last.ckpt`` is still the last epoch's, written after
    the history has its epoch (Lightning saved it at the end of validation: after epoch 1
    of 3, with the history of epoch 0 only), so a continued run ends as a straight one."""
    every2 = ("+trainer.check_val_every_n_epoch=2", "model.dropout=0.2")
    straight = train(_cfg(tmp_path, "straight", *every2, "trainer.max_epochs=4"))
    train(_cfg(tmp_path, "run", *every2))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    continued = train(_cfg(tmp_path, "run", *every2, "trainer.max_epochs=4", "resume=true"))
    assert continued.val_curve == pytest.approx(straight.val_curve, nan_ok=True)
    assert continued.fair.best_epoch == straight.fair.best_epoch


@pytest.mark.parametrize("interval", ["0.5", "10"])
def test_validation_within_an_epoch_is_refused(tmp_path, interval):
    """A run's history, fair protocol and exact resume go by epoch: a checkpoint of a
    mid-epoch validation would be tested as the epoch's, and a resume would not be exact."""
    with pytest.raises(ValueError, match=f"val_check_interval={interval} validates within"):
        train(_cfg(tmp_path, "mid", f"+trainer.val_check_interval={interval}"))


def test_a_validation_set_without_a_value_gives_no_fair_test(tmp_path, monkeypatch):
    """A binary validation set of one class has no ROC-AUC at any epoch: no best epoch, so
    no fair test, and the run's summary says so (it had tested epoch 0 and then failed)."""
    import diffpool.training.tasks as tasks

    monkeypatch.setattr(tasks.LabelwiseRanking, "compute", lambda self: torch.tensor(float("nan")))
    result = train(_cfg(tmp_path, "onevalue", "data.task=binary"))
    assert result.fair.best_epoch == -1 and result.fair.test is None
    assert result.summary()[0].startswith("fair:  no validation value")


def test_two_overwrites_within_one_second_keep_both_earlier_runs(tmp_path, monkeypatch):
    """``replaced-<time>/`` is named to the second: a second move within it gets a folder of
    its own instead of failing (or mixing two runs' files)."""
    import diffpool.training.run as run_module

    monkeypatch.setattr(run_module.time, "strftime", lambda _: "20261207-120000")
    out = tmp_path / "run"
    out.mkdir()
    for text in ("first", "second"):
        (out / "results.json").write_text(text)
        run_module._move_aside(out)
    moved = sorted(out.glob("replaced-*"))
    assert [p.name for p in moved] == ["replaced-20261207-120000", "replaced-20261207-120000-2"]
    assert [(p / "results.json").read_text() for p in moved] == ["first", "second"]


@pytest.mark.parametrize("trainer", ["x", [1], {"fast_dev_run": torch.tensor([1, 2])}])
def test_a_checkpoints_malformed_config_is_no_crash_of_the_directory_check(tmp_path, trainer):
    """A rerun without resume reads last.ckpt's stored config for debug settings: a config that
    is no run's (the file is data) leaves the folder named as it is, not a raw error."""
    from omegaconf import OmegaConf

    from diffpool.training.callbacks import RunConfig
    from diffpool.training.run import check_run_directory

    (tmp_path / "checkpoints").mkdir()
    torch.save({RunConfig.KEY: {"trainer": trainer}}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(RunDirectoryError, match="checkpoints of an unfinished run"):
        check_run_directory(tmp_path, OmegaConf.create({}))


def test_moving_a_run_aside_empties_no_other_name_of_its_log(tmp_path):
    """train.log is emptied in place (Hydra holds it open): where it is a hard link (the folder
    snapshotted with ``cp -al``), the snapshot's file keeps its lines."""
    import os

    import diffpool.training.run as run_module

    out, snapshot = tmp_path / "run", tmp_path / "snapshot.log"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "train.log").write_text("the earlier run\n")
    os.link(out / "train.log", snapshot)
    run_module._move_aside(out)
    assert snapshot.read_text() == "the earlier run\n"
    assert not (out / "results.json").exists()


def test_a_checkpoints_debug_setting_is_named_short_and_escaped(tmp_path):
    """The debug settings named from last.ckpt's stored config are data: a long value or a
    terminal escape is not printed as it is."""
    from omegaconf import OmegaConf

    from diffpool.training.callbacks import RunConfig
    from diffpool.training.run import check_run_directory

    (tmp_path / "checkpoints").mkdir()
    value = "\x1b[2J" + "x" * 10_000
    config = {"trainer": {"fast_dev_run": value}}
    torch.save({RunConfig.KEY: config}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(RunDirectoryError, match="debugging run") as caught:
        check_run_directory(tmp_path, OmegaConf.create({}))
    assert "\x1b" not in str(caught.value) and len(str(caught.value)) < 500


def test_resume_takes_the_default_of_a_setting_the_runs_split_did_not_read():
    """A run of a split file stored with val_ratio=0 (ignored then, refused since by the data
    module): resume=true with val_ratio back at its default continues it; under k-fold CV
    val_ratio is the run's split and may not change."""
    from omegaconf import OmegaConf, open_dict

    from diffpool.training.run import _not_resumable

    data = {"split": "file", "split_file": "s.json", "val_ratio": 0.0, "inner": 0}
    earlier = {"data": data, "trainer": {"max_epochs": 5}}
    now = OmegaConf.create({"data": {**data, "val_ratio": 0.1}, "trainer": {"max_epochs": 9}})
    assert _not_resumable(earlier, now) == []
    kfold = {"data": {**data, "split": "kfold"}, "trainer": {"max_epochs": 5}}
    with open_dict(now):
        now.data.split = "kfold"
    assert _not_resumable(kfold, now) == ["data.val_ratio"]
