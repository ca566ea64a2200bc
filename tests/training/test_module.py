"""GraphClassifier with Lightning's own tools, as a Lightning user calls them: the tuner, any
precision, the loggers' hyperparameters, a plain nn.Module as the model."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.tuner import Tuner

from diffpool.models import GlobalPoolNet
from diffpool.training import GraphClassifier, TUDataModule

SPEC = {"_target_": "diffpool.models.build_model", "variant": "diffpool", "hidden_channels": 16}


@pytest.fixture()
def mutag(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "mutag-module"
    dm = TUDataModule("MUTAG", root=root, batch_size=16)
    dm.setup()
    return dm


def _module(dm, model=SPEC, **kwargs):
    return GraphClassifier(model, dm.num_features, dm.num_classes, dm.max_num_nodes, **kwargs)


def _trainer(tmp_path, **kwargs):
    options = dict(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return Trainer(**{**options, **kwargs})


def test_lr_find_sets_the_optimizers_learning_rate(tmp_path, mutag):
    module = _module(mutag)
    assert module.lr == 1e-3
    finder = Tuner(_trainer(tmp_path, limit_train_batches=None, max_epochs=-1)).lr_find(
        module,
        datamodule=mutag,
        min_lr=1e-6,
        max_lr=1e-2,
        num_training=24,
        early_stop_threshold=None,
    )
    suggestion = finder.suggestion()
    assert suggestion is not None and module.lr == pytest.approx(suggestion)
    # the spec the checkpoint stores holds it, and configure_optimizers uses it
    assert module.hparams.optimizer["lr"] == pytest.approx(suggestion)
    assert module.configure_optimizers().param_groups[0]["lr"] == pytest.approx(suggestion)


def test_scale_batch_size_scales_the_data_modules_batches(tmp_path, mutag):
    module = _module(mutag)
    size = Tuner(_trainer(tmp_path)).scale_batch_size(
        module, datamodule=mutag, mode="power", steps_per_trial=1, init_val=16, max_trials=2
    )
    assert size == 32 and mutag.batch_size == 32  # 16 fits, so 32 (two trials)
    # the loader follows: 152 training graphs in ceil(152 / 32) = 5 even batches
    loader = mutag.train_dataloader()
    assert len(loader) == 5 and max(len(batch.y) for batch in loader) <= 32


@pytest.mark.parametrize("precision", ["64-true", "32-true", "bf16-mixed"])
def test_every_cpu_precision_trains(tmp_path, mutag, precision):
    module = _module(mutag)
    trainer = _trainer(tmp_path, precision=precision)
    trainer.fit(module, datamodule=mutag)
    loss = trainer.callback_metrics["train/loss"]
    assert math.isfinite(float(loss))
    expected = torch.float64 if precision == "64-true" else torch.float32
    assert next(module.parameters()).dtype == expected


def test_hyperparameters_reach_the_loggers_once(tmp_path, mutag):
    """One ``log_hyperparams`` call per fit (TensorBoard made one hparams session of each),
    with the module's, the data module's and the parameter counts."""
    calls = []

    class Counting(CSVLogger):
        def log_hyperparams(self, params, *args, **kwargs):
            calls.append(dict(params))
            super().log_hyperparams(params, *args, **kwargs)

    module = _module(mutag)
    logger = Counting(tmp_path, name="logs")
    _trainer(tmp_path, logger=logger, log_every_n_steps=1).fit(module, datamodule=mutag)
    assert len(calls) == 1 and {"model", "data/name", "num_parameters"} <= set(calls[0])
    hparams = yaml.safe_load((tmp_path / "logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams["model"]["variant"] == "diffpool"
    assert hparams["optimizer"]["lr"] == 1e-3 and hparams["in_channels"] == 7
    assert hparams["data/name"] == "MUTAG" and hparams["data/batch_size"] == 16
    assert hparams["num_parameters"] == sum(p.numel() for p in module.model.parameters()) > 0


def test_a_plain_module_trains_and_reloads_with_the_same_network(tmp_path, mutag):
    def network():
        return GlobalPoolNet(mutag.num_features, mutag.num_classes, hidden_channels=16)

    module = _module(mutag, model=network())
    trainer = _trainer(tmp_path, enable_checkpointing=True)
    trainer.fit(module, datamodule=mutag)
    (ckpt,) = list(tmp_path.rglob("*.ckpt"))
    reloaded = GraphClassifier.load_from_checkpoint(ckpt, model=network())
    for key, value in module.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_without_a_validation_set_the_test_fold_selects_no_model(tmp_path):
    """val_ratio=0 (a documented setting): the module takes the data module's stages, so the
    test fold is logged as heldout/ only, and a callback that would select on val/ is refused
    before the first step."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = TUDataModule("MUTAG", root=tmp_path / "TU", batch_size=16, val_ratio=0.0)
    module = GraphClassifier(SPEC)  # the data's facts and stages: the data module's
    trainer = _trainer(tmp_path / "plain", enable_checkpointing=True)
    trainer.fit(module, datamodule=data)
    logged = set(trainer.logged_metrics) | set(trainer.callback_metrics)
    assert "heldout/acc" in logged and not [k for k in logged if k.startswith("val/")]
    assert module.val_stages == ("heldout",)
    selecting = ModelCheckpoint(dirpath=tmp_path / "selecting", monitor="val/acc", mode="max")
    trainer = _trainer(tmp_path / "selecting", enable_checkpointing=True, callbacks=[selecting])
    with pytest.raises(ValueError, match=r"no validation set .*ModelCheckpoint\(monitor='val/acc'"):
        trainer.fit(GraphClassifier(SPEC), datamodule=data)
    assert trainer.global_step == 0 and not list((tmp_path / "selecting").rglob("*.ckpt"))
    scheduled = GraphClassifier(
        SPEC, scheduler={"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"}
    )
    with pytest.raises(ValueError, match="scheduler_monitor='val/acc'"):
        _trainer(tmp_path / "scheduled").fit(scheduled, datamodule=data)


def test_nothing_watches_the_test_fold_even_beside_a_validation_set(mutag, tmp_path):
    """A checkpoint, an early stop or a plateau scheduler watching heldout/ (the test fold,
    evaluated beside the validation set) would let the test set choose the model: refused
    before the first step, with or without a validation set."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    assert _module(mutag).val_stages == ("val", "heldout")
    for callback in (
        ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="heldout/acc", mode="max"),
        EarlyStopping(monitor="heldout/loss"),
    ):
        trainer = _trainer(tmp_path, enable_checkpointing=True, callbacks=[callback])
        with pytest.raises(ValueError, match=r"monitor='heldout/.*would watch the test fold"):
            trainer.fit(_module(mutag), datamodule=mutag)
        assert trainer.global_step == 0
    plateau = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"}
    scheduled = _module(mutag, scheduler=plateau, scheduler_monitor="heldout/acc")
    trainer = _trainer(tmp_path)
    with pytest.raises(ValueError, match="scheduler_monitor='heldout/acc' would watch the test"):
        trainer.fit(scheduled, datamodule=mutag)
    assert trainer.global_step == 0 and not list(tmp_path.rglob("*.ckpt"))


def test_a_scheduler_without_a_monitor_trains_without_a_validation_set(tmp_path):
    """Lightning reads a scheduler's monitor for ReduceLROnPlateau only: a StepLR (whose
    scheduler_monitor is left at its default, val/) trains without a validation set; a
    heldout/ monitor there is told to go, not to move to val/."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = TUDataModule("MUTAG", root=tmp_path / "TU", batch_size=16, val_ratio=0.0)
    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1}
    trainer = _trainer(tmp_path)
    trainer.fit(GraphClassifier(SPEC, scheduler=step), datamodule=data)
    assert trainer.global_step == 3
    selecting = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="heldout/acc", mode="max")
    trainer = _trainer(tmp_path, enable_checkpointing=True, callbacks=[selecting])
    with pytest.raises(ValueError, match=r"no validation set .*heldout/acc'\) would select on the"):
        trainer.fit(GraphClassifier(SPEC), datamodule=data)


def test_the_configs_scheduler_monitor_auto_is_the_tasks_validation_metric(mutag, tmp_path):
    """``module.scheduler_monitor: auto`` of conf/train.yaml, instantiated by hand
    (``hydra.utils.instantiate(cfg.module, ...)``), watches the task's val/ metric: it was
    passed on to Lightning as the metric ``auto``, which stopped the fit at its first epoch."""
    plateau = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "auto"}
    module = _module(mutag, scheduler=plateau, scheduler_monitor="auto")
    assert module.hparams.scheduler_monitor == "val/acc"
    _trainer(tmp_path).fit(module, datamodule=mutag)
    assert module.configure_optimizers()["lr_scheduler"]["monitor"] == "val/acc"


def test_a_plateau_scheduler_steps_after_the_epochs_that_validate(mutag, tmp_path):
    """``check_val_every_n_epoch=2``: a ReduceLROnPlateau watching val/acc had no value
    after epoch 0 (Lightning stopped the fit), and after every other epoch it would read the
    last validation's again; it steps after epochs 1 and 3 of 4 only."""
    plateau = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "auto"}
    module = _module(mutag, scheduler=plateau)
    trainer = _trainer(tmp_path, max_epochs=4, check_val_every_n_epoch=2)
    trainer.fit(module, datamodule=mutag)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_a_resumed_plateau_scheduler_steps_as_in_a_run_that_never_stopped(mutag, tmp_path):
    """Lightning steps a ReduceLROnPlateau after the epoch's checkpoint and, on resume, not
    again (it has not the metric): resumed after epoch 1, it took 3 steps in 4 epochs, and
    lowered the learning rate an epoch late. The checkpoint keeps the value; it steps."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    plateau = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "min",
               "patience": 0, "factor": 0.5}  # fmt: skip

    def fit(epochs, folder, ckpt_path=None):
        torch.manual_seed(0)
        module = _module(mutag, scheduler=plateau)
        last = ModelCheckpoint(dirpath=tmp_path / folder, filename="last", monitor=None)
        trainer = _trainer(tmp_path, max_epochs=epochs, enable_checkpointing=True,
                           callbacks=[last])  # fmt: skip
        trainer.fit(module, datamodule=mutag, ckpt_path=ckpt_path)
        return trainer.lr_scheduler_configs[0].scheduler, trainer.optimizers[0]

    straight, optimizer = fit(4, "straight")
    fit(2, "stopped")
    resumed, resumed_optimizer = fit(4, "stopped", tmp_path / "stopped" / "last.ckpt")
    assert resumed.last_epoch == straight.last_epoch == 4
    lrs = [o.param_groups[0]["lr"] for o in (optimizer, resumed_optimizer)]
    assert lrs[0] == lrs[1]


def test_a_module_built_for_other_data_stops_before_the_first_step(tmp_path):
    from diffpool.training import GraphDataModule
    from diffpool.training.module import DataMismatchError
    from helpers import tiny_graphs

    labels = GraphDataModule(tiny_graphs("multilabel", 40), task="multilabel", num_folds=4)
    module = GraphClassifier(SPEC, in_channels=4, num_classes=2, max_num_nodes=12)  # multiclass
    trainer = _trainer(tmp_path)
    with pytest.raises(
        DataMismatchError, match=r"num_classes 2 \(the data: 4\), task 'multiclass'"
    ):
        trainer.fit(module, datamodule=labels)
    assert trainer.global_step == 0
    # without them, the module takes the data's: the multi-label run trains and validates
    module = GraphClassifier(SPEC)
    _trainer(tmp_path).fit(module, datamodule=labels)
    assert module.task.name == "multilabel" and module.hparams.num_classes == 4


def test_a_plain_module_reloaded_without_its_network_is_a_named_error(tmp_path, mutag):
    """A module trained with a network object stores no spec of it: a reload without
    ``model=``, or with another network, says to pass the checkpoint's network."""
    module = _module(mutag, model=GlobalPoolNet(mutag.num_features, mutag.num_classes, 16))
    _trainer(tmp_path, enable_checkpointing=True).fit(module, datamodule=mutag)
    (ckpt,) = list(tmp_path.rglob("*.ckpt"))
    with pytest.raises(ValueError, match=r"pass model=.*the network it was trained with"):
        GraphClassifier.load_from_checkpoint(ckpt)
    other = GlobalPoolNet(mutag.num_features, mutag.num_classes, hidden_channels=8)
    with pytest.raises(ValueError, match=r"pass model=.*the network it was trained with"):
        GraphClassifier.load_from_checkpoint(ckpt, model=other)


class NaNFromCall(torch.nn.Module):
    """A graph classifier whose logits are NaN from its ``bad``-th training call on."""

    def __init__(self, in_channels, num_classes, bad):
        super().__init__()
        self.lin, self.bad, self.calls = torch.nn.Linear(in_channels, num_classes), bad, 0

    def forward(self, x, edge_index, batch):
        from torch_geometric.nn import global_mean_pool

        logits = global_mean_pool(self.lin(x), batch)
        self.calls += self.training
        return logits * float("nan") if self.training and self.calls > self.bad else logits


@pytest.mark.parametrize("validation", [True, False])
def test_a_model_producing_nan_stops_with_the_step_it_went_non_finite(tmp_path, mutag, validation):
    """The steps only note a non-finite loss on the device; it is read once per epoch, before
    validation and before the epoch's checkpoints, and the error names where it was."""
    from diffpool.training import NonFiniteLossError

    module = _module(mutag, model=NaNFromCall(mutag.num_features, mutag.num_classes, bad=3))
    limits = {} if validation else {"limit_val_batches": 0}
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=5, enable_checkpointing=True,
                       **limits)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 0, step 3 "):
        trainer.fit(module, datamodule=mutag)
    assert not list(tmp_path.rglob("*.ckpt"))  # no checkpoint of the epoch that went NaN


def test_a_name_given_at_load_is_trusted_for_the_given_spec_only(tmp_path):
    """``load_from_checkpoint(path, model=<spec of the user's class>)``: the checkpoint's own
    specs (its node_encoder) do not build that class with the file's arguments."""
    from diffpool.utils.targets import UntrustedTargetError

    model = {"_target_": "diffpool.models.GlobalPoolNet", "hidden_channels": 8}
    module = GraphClassifier(model, in_channels=3, num_classes=2)
    own = "torch.nn.modules.linear.Identity"  # the user's, in no registry under this name
    hparams = {**dict(module.hparams), "node_encoder": {"_target_": own, "file": "args"}}
    path = tmp_path / "crafted.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, path)
    given = {"_target_": own}
    with pytest.raises(UntrustedTargetError, match=own):
        GraphClassifier.load_from_checkpoint(path, model=given, strict=False)


def test_ogb_evaluator_scores_every_rank_s_share_of_an_uneven_test_set():
    """Under DDP every rank holds its share of the test set, one graph more on some ranks
    where the set's size is no multiple of the ranks (ogbg-molhiv's 4,113 test graphs on 2
    GPUs): the evaluator gets every graph once, in rank order. ``all_gather`` takes one shape
    on every rank (gloo and NCCL fail or hang otherwise), as the fake group below."""
    import threading
    from types import SimpleNamespace

    world = 2
    barrier, slots = threading.Barrier(world), [None] * world

    def gather_on(rank):
        def all_gather(tensor, group=None, sync_grads=False):
            slots[rank] = tensor
            barrier.wait()
            shapes, got = {tuple(t.shape) for t in slots}, list(slots)
            barrier.wait()
            if len(shapes) > 1:
                raise RuntimeError(f"all_gather of tensors of different shapes {shapes}")
            return torch.stack(got)

        return all_gather

    shares = [torch.arange(6.0).view(6, 1), torch.arange(6.0, 11.0).view(5, 1)]
    scored, errors = [None] * world, []

    def rank_run(rank):
        module = GraphClassifier(SPEC, in_channels=3, num_classes=1, max_num_nodes=8,
                                 task="binary")  # fmt: skip
        evaluator = SimpleNamespace(
            eval=lambda d, rank=rank: scored.__setitem__(rank, d) or {"rocauc": 0.5}
        )
        module._trainer = SimpleNamespace(
            world_size=world,
            datamodule=SimpleNamespace(evaluator=evaluator),
            strategy=SimpleNamespace(all_gather=gather_on(rank)),
        )
        module.log = lambda *args, **kwargs: None
        module._ogb = ([shares[rank] % 2], [shares[rank]])
        try:
            module.on_test_epoch_end()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=rank_run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for got in scored:
        assert got["y_pred"].view(-1).tolist() == list(range(11))
        assert got["y_true"].view(-1).tolist() == [v % 2 for v in range(11)]
