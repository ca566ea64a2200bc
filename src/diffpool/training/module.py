"""The LightningModule that trains any graph classifier of the package."""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch

from diffpool.models.output import ClassifierOutput, classify, unbatch_levels
from diffpool.training.tasks import Task
from diffpool.utils import files, targets

log = logging.getLogger(__name__)

#: the stage of each validation loader without a data module that names them (two loaders
#: given to ``Trainer.fit``): the validation set, then the test fold
VAL_STAGES = ("val", "heldout")


DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}

#: how an error names each stage's loss
STAGE_NAMES = {"train": "training", "val": "validation", "heldout": "test-fold", "test": "test"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class DataMismatchError(ValueError):
    """The module was built for other data than the data module it is fitted with."""


def _spec(value: Mapping | None, name: str) -> dict[str, Any] | None:
    """A plain-dict ``_target_`` spec (what the checkpoint stores and reloads)."""
    if value is None:
        return None
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping) or "_target_" not in value:
        raise TypeError(f"{name} must be a mapping with a '_target_', got {value!r}")
    return {k: v for k, v in value.items() if k != "_partial_"}


def _width(encoder: torch.nn.Module | None, width: int) -> int:
    """The output width of a feature encoder (``width`` without one): its ``out_channels``,
    else the ``embedding_dim`` / ``out_features`` of its last layer that has one."""
    if encoder is None:
        return width
    found = getattr(encoder, "out_channels", None)
    for module in encoder.modules():
        found = getattr(module, "embedding_dim", None) or getattr(module, "out_features", found)
    if not isinstance(found, int):
        raise ValueError(
            f"cannot tell the output width of the feature encoder {type(encoder).__name__}: "
            "give it an out_channels attribute"
        )
    return getattr(encoder, "out_channels", found)


def _edge_dim_for(spec: Mapping | None, edge_dim: int | None, required: bool) -> int | None:
    """The data's edge feature width where the model spec's encoder takes edge features;
    else :obj:`None` (the model is built without them and they are unused, logged), or, where
    the data's edge features were asked for (``required``), the model's ValueError."""
    if edge_dim is None or spec is None:
        return None
    from diffpool.nn.encoders import ENCODERS

    encoder = ENCODERS.get(str(spec.get("encoder", "")))
    if encoder is not None and not encoder.edge and required:
        raise ValueError(
            f"edge_dim={edge_dim} given, but encoder {spec.get('encoder')!r} takes no edge "
            "features (the data's edge_features=true: use an encoder that takes them, gine "
            "or gat, or edge_features=false)"
        )
    if encoder is None or not encoder.edge:
        log.info(
            "the data has edge features; encoder %s does not take them (gine, gat do)",
            spec.get("encoder"),
        )
        return None
    return edge_dim


def _facts(datamodule) -> dict[str, Any]:
    """What a :class:`~diffpool.training.GraphDataModule` says the module needs."""
    if datamodule.task is None:
        datamodule.setup()
    task = datamodule.task
    return dict(
        in_channels=datamodule.num_features,
        num_classes=task.num_outputs,
        max_num_nodes=datamodule.max_num_nodes,
        task=task.name,
        metric=task.metric,
        edge_dim=datamodule.edge_dim,
        node_encoder=_spec(datamodule.node_encoder, "node_encoder"),
        edge_encoder=_spec(datamodule.edge_encoder, "edge_encoder"),
    )


class GraphClassifier(LightningModule):
    r"""Trains a graph-level model of :mod:`diffpool.models` for any task, with the loss

    .. math::
        \mathcal{L} = \mathcal{L}_{\mathrm{task}}(\hat{y}, y) + \sum_l \left(
        \lambda_{\mathrm{link}} \mathcal{L}^{(l)}_{\mathrm{link}} +
        \lambda_{\mathrm{ent}} \mathcal{L}^{(l)}_{\mathrm{ent}} \right)

    (the model's ``link_loss_coef`` and ``entropy_loss_coef``; the task loss of
    :class:`~diffpool.training.tasks.Task`). Logged under ``train/``, ``val/``, ``heldout/``
    (the test fold every epoch, for the paper protocol) and ``test/``: ``loss``, the task
    loss, ``aux_loss``, the task's metrics and the per-level ``link_loss_l{l}`` and
    ``entropy_loss_l{l}``; ``test/ogb_<metric>`` with a data module's OGB ``evaluator``.

    What the data says (input width, task and outputs, largest graph, edge features and
    their encoders, validation loaders) comes from the
    :class:`~diffpool.training.GraphDataModule` it is fitted with (:meth:`connect`); given
    and different, it is a :class:`DataMismatchError`. A callback or plateau scheduler that
    watches ``heldout/``, or ``val/`` without a validation set (``val_ratio=0``), is an error:
    the test fold never selects a model.

    A non-finite loss stops training with :class:`NonFiniteLossError` (stage, epoch and
    step), read once per stage and epoch, before any checkpoint of that epoch. Every training
    step reseeds torch from ``(seed, epoch, step)``, so a resumed run draws the dropout masks
    of one that never stopped. :attr:`lr` is what ``Tuner.lr_find`` reads and sets; any
    ``precision`` runs (the batch follows the module's dtype).

    The network, encoders, optimizer and scheduler are ``_target_`` specs, so a checkpoint
    holds plain data: :meth:`load_from_checkpoint` reads it with ``weights_only=True`` and
    builds only the names of the package's registries (:mod:`diffpool.utils.targets`) and
    those named again at the call (``trust=["my_pkg.MyModel"]``).

    Args:
        model (Mapping or torch.nn.Module): Spec of the network, called with ``in_channels``,
            ``num_classes`` and ``max_num_nodes``, e.g. ``{"_target_":
            "diffpool.models.build_model", "variant": "diffpool", "num_levels": 2}``; or the
            network itself (then not stored in the checkpoint's hyperparameters: reload with
            ``GraphClassifier.load_from_checkpoint(path, model=<the same network>)``).
        in_channels (int, optional): Node feature size (of ``x`` as the data gives it).
            (default: :obj:`None`: the data module's)
        num_classes (int, optional): The output size: classes (multiclass), 1 (binary),
            labels (multilabel) or target values (regression). (default: :obj:`None`: the
            data module's)
        max_num_nodes (int, optional): Largest graph of the dataset. (default: :obj:`None`:
            the data module's)
        optimizer (Mapping, optional): Spec called with ``params``.
            (default: Adam, lr 1e-3)
        scheduler (Mapping, optional): Spec called with ``optimizer``, stepped every epoch;
            ``mode: auto`` (``ReduceLROnPlateau``'s) is the direction of the metric it watches
            (``"max"`` for accuracy or AUC, ``"min"`` for MAE or a loss). (default: :obj:`None`)
        scheduler_monitor (str, optional): Metric for schedulers such as
            ``ReduceLROnPlateau``; ``"auto"`` (diffpool-train's config) is the default.
            (default: :obj:`None`: the task's ``val/<metric>``)
        seed (int, optional): Base of the per-epoch seeds. (default: :obj:`0`)
        task (str, optional): ``"multiclass"``, ``"binary"``, ``"multilabel"`` or
            ``"regression"``. (default: :obj:`None`: the data module's; ``"multiclass"``
            without one)
        metric (str, optional): The selection metric. (default: the data module's, else the
            task's first)
        loss (str, optional): ``"l1"`` or ``"mse"`` for regression. (default: the task's)
        edge_dim (int, optional): Edge feature size, for models whose encoders take edge
            features (passed to the model only when set). (default: :obj:`None`: the data
            module's, where the model's encoder takes edge features)
        node_encoder (Mapping, optional): Spec of the module embedding ``x``.
            (default: :obj:`None`: the data module's)
        edge_encoder (Mapping, optional): Spec of the module embedding ``edge_attr``.
            (default: :obj:`None`: the data module's)
    """

    def __init__(
        self,
        model: Mapping | torch.nn.Module,
        in_channels: int | None = None,
        num_classes: int | None = None,
        max_num_nodes: int | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        scheduler_monitor: str | None = None,
        seed: int = 0,
        task: str | None = None,
        metric: str | None = None,
        loss: str | None = None,
        edge_dim: int | None = None,
        node_encoder: Mapping | None = None,
        edge_encoder: Mapping | None = None,
    ):
        super().__init__()
        self._network = model if isinstance(model, torch.nn.Module) else None
        specs = dict(
            model=None if self._network is not None else _spec(model, "model"),
            optimizer=_spec(optimizer, "optimizer") or dict(DEFAULT_OPTIMIZER),
            scheduler=_spec(scheduler, "scheduler"),
            node_encoder=_spec(node_encoder, "node_encoder"),
            edge_encoder=_spec(edge_encoder, "edge_encoder"),
        )
        # from a checkpoint (load_from_checkpoint), every name is checked here, before
        # anything is built, also what is built later (the optimizer, a deferred network)
        for key, spec in specs.items():
            targets.check(spec, targets.NESTED_KINDS[key])
        self.save_hyperparameters(
            dict(
                in_channels=None if in_channels is None else int(in_channels),
                num_classes=None if num_classes is None else int(num_classes),
                max_num_nodes=None if max_num_nodes is None else int(max_num_nodes),
                scheduler_monitor=scheduler_monitor,
                seed=int(seed),
                task=task,
                metric=metric,
                loss=loss,
                edge_dim=None if edge_dim is None else int(edge_dim),
                **specs,
            ),
            logger=False,  # on_fit_start logs them once, with the data's
        )
        self.model: torch.nn.Module | None = None
        self.task: Task | None = None
        #: per stage, on the device: the step and losses of its first non-finite loss
        self._nonfinite: dict[str, torch.Tensor] = {}
        self._val_stages: tuple[str, ...] = VAL_STAGES
        if in_channels is not None and num_classes is not None:
            self._build()

    @property
    def val_stages(self) -> tuple[str, ...]:
        """The stage of each validation loader: ``"val"`` and ``"heldout"``, or the data
        module's :attr:`~diffpool.training.GraphDataModule.val_stages`."""
        return self._val_stages

    def _build(self) -> None:
        """Build the feature encoders, the network and the metrics from the hyperparameters."""
        hp = self.hparams
        self.task = Task(hp.task or "multiclass", hp.num_classes, metric=hp.metric, loss=hp.loss)
        hp.update(
            task=self.task.name,
            metric=self.task.metric,
            loss=self.task.loss,
            # None, or conf/train.yaml's auto (a config instantiated by hand passes it on)
            scheduler_monitor=(
                f"val/{self.task.metric}"
                if hp.scheduler_monitor in (None, "", "auto")
                else hp.scheduler_monitor
            ),
        )
        self.node_encoder = targets.build(hp.node_encoder, "encoder") if hp.node_encoder else None
        self.edge_encoder = targets.build(hp.edge_encoder, "encoder") if hp.edge_encoder else None
        network = self._network
        if network is None:
            facts = {}
            if hp.edge_dim is not None:
                facts["edge_dim"] = _width(self.edge_encoder, hp.edge_dim)
            network = targets.build(
                hp.model,
                "model",
                in_channels=_width(self.node_encoder, hp.in_channels),
                num_classes=hp.num_classes,
                max_num_nodes=hp.max_num_nodes,
                **facts,
            )
        self.model = network
        # keyed "<stage>_<metric>": ModuleDict keys must not shadow Module attributes ("train")
        self.stage_metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": metric
                for stage in ("train", *VAL_STAGES, "test")
                for name, metric in self.task.metrics().items()
            }
        )

    def connect(self, datamodule) -> None:
        """Build the network for ``datamodule``'s data (or check that it was built for it)
        and take its validation stages; :meth:`setup` calls it.

        Raises:
            DataMismatchError: the module was built for other data.
        """
        facts = _facts(datamodule)
        self._val_stages = tuple(datamodule.val_stages)
        hp = self.hparams
        differ = [
            f"{key} {hp[key]!r} (the data: {facts[key]!r})"
            for key in ("in_channels", "num_classes", "task")
            if hp.get(key) is not None and hp[key] != facts[key]
        ]
        if differ:
            raise DataMismatchError(
                f"the module was built for other data than {datamodule.name}: "
                + ", ".join(differ)
                + "; leave them out (the data module says them) or fit it with data that "
                "gives them"
            )
        if self.model is None:
            required = bool(getattr(datamodule, "edge_features_required", False))
            facts["edge_dim"] = _edge_dim_for(hp.model, facts["edge_dim"], required)
            hp.update({k: v for k, v in facts.items() if hp.get(k) is None})
            self._build()

    def setup(self, stage: str) -> None:
        """:meth:`connect` to the trainer's data module (without one the module must have been
        built)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "val_stages"):
            self.connect(datamodule)
        elif self.model is None:
            raise ValueError(
                "GraphClassifier was given neither in_channels nor num_classes: fit it with a "
                "GraphDataModule (datamodule=...), which says them, or give them"
            )

    def _selecting(self) -> list[str]:
        """The callbacks and plateau schedulers that would select or steer on the test fold:
        those watching ``heldout/``, and ``val/`` when the data has no validation set (the
        test fold is then the only one evaluated). A callback's ``monitor`` is what is read
        (Lightning's convention), a scheduler's for ReduceLROnPlateau only (as Lightning)."""
        prefixes = ("heldout/",) if "val" in self.val_stages else ("heldout/", "val/")
        callbacks = [
            f"{type(c).__name__}(monitor={c.monitor!r})"
            for c in self.trainer.callbacks
            if str(getattr(c, "monitor", None) or "").startswith(prefixes)
        ]
        return callbacks + [
            f"scheduler_monitor={c.monitor!r}"
            for c in self.trainer.lr_scheduler_configs
            if c.reduce_on_plateau and str(c.monitor or "").startswith(prefixes)
        ]

    def _refuse_test_fold_selection(self) -> None:
        """Nothing that selects a checkpoint, stops early or steers the learning rate
        watches the test fold (:meth:`_selecting`)."""
        watching = self._selecting()
        if not watching:
            return
        if "val" in self.val_stages:
            raise ValueError(
                ", ".join(watching) + " would watch the test fold (heldout/): a checkpoint, an "
                "early stop or a learning-rate schedule chosen on it leaks the test set into "
                "the model; watch val/ (the validation set) instead, or nothing "
                "(diffpool-train: callbacks=no_validation keeps only the last checkpoint)"
            )
        raise ValueError(
            "the data has no validation set (val_ratio=0, or a split whose val set is "
            "empty: only the test fold is evaluated, logged as heldout/), but "
            + ", ".join(watching)
            + " would select on the test fold: remove it (diffpool-train: "
            "callbacks=no_validation keeps only the last checkpoint) so that the test fold "
            "never selects a model"
        )

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        trust: Sequence[str] = (),
        **kwargs: Any,
    ) -> GraphClassifier:
        """A module from a checkpoint, read as data (``weights_only=True``), building only
        the names of the package's registries, of ``trust`` and of the specs given in
        ``kwargs`` (which replace the checkpoint's hyperparameters). Lightning's other ways to
        build the module (``_instantiator``, an ``hparams_file``) are not used.

        Raises:
            UntrustedTargetError: the checkpoint names another model, encoder, optimizer or
                scheduler.
            ValueError: a module trained with a network object reloaded without ``model=``,
                or weights that do not fit the network built.
        """
        if not weights_only:
            raise ValueError(
                "GraphClassifier checkpoints hold only plain data: they are read with "
                "weights_only=True (a pickled object in a file could run code on load)"
            )
        if hparams_file is not None:
            raise ValueError(
                "hparams_file is not read (YAML can name code): pass the hyperparameters to "
                "change as keyword arguments"
            )
        source = checkpoint_path if isinstance(checkpoint_path, str | Path) else "the checkpoint"
        checkpoint = files.load(checkpoint_path, map_location)
        if not isinstance(checkpoint, dict):
            raise ValueError(
                f"{source} is not a Lightning checkpoint: it holds a "
                f"{type(checkpoint).__name__}, not a mapping"
            )
        stored = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        if not isinstance(stored, dict):
            raise ValueError(
                f"{source} is not a Lightning checkpoint: its {cls.CHECKPOINT_HYPER_PARAMS_KEY} "
                f"is a {type(stored).__name__}, not a mapping"
            )
        own = inspect.signature(cls.__init__).parameters
        hparams = {k: v for k, v in stored.items() if k in own and k != "self"}
        trusted = {*trust, *targets.target_names(kwargs)}
        given = "model" in kwargs and kwargs["model"] is not None
        if not given and hparams.get("model") is None:
            raise ValueError(
                f"{source} was trained with a network object, and stores no spec of it: "
                "pass model=<the network it was trained with>"
            )
        with targets.reading(source, trust):  # the names of kwargs: for kwargs' specs only
            for key, spec in hparams.items():
                if key not in kwargs and key in targets.NESTED_KINDS:
                    targets.check(spec, targets.NESTED_KINDS[key])
        with targets.reading(source, trusted):
            module = cls(**{**hparams, **kwargs})
        module.on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        try:
            module.load_state_dict(
                state, strict=module.strict_loading if strict is None else strict
            )
        except RuntimeError as err:  # torch's list of every missing and unexpected weight
            first = str(err).splitlines()[0]
            raise ValueError(
                f"the weights of {source} do not fit the network built ({first} ...): pass "
                "model= matching the checkpoint (the network it was trained with, or its spec)"
            ) from err
        tensor = next((t for t in state.values() if isinstance(t, torch.Tensor)), None)
        return module.to(tensor.device) if tensor is not None else module

    @property
    def lr(self) -> float:
        """The optimizer spec's learning rate (set by ``Tuner.lr_find``, stored in checkpoints)."""
        return float(self.hparams.optimizer.get("lr", DEFAULT_OPTIMIZER["lr"]))

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams.optimizer["lr"] = float(value)

    def on_fit_start(self) -> None:
        """Refuse what would select on the test fold (before the first step; the optimizers
        are configured by now); log the module's hyperparameters, the data module's
        (``data/``) and the parameter counts to every logger in one call (one TensorBoard
        hparams session)."""
        self._refuse_test_fold_selection()
        extra: dict[str, Any] = {
            **self.hparams,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "num_trainable_parameters": sum(
                p.numel() for p in self.model.parameters() if p.requires_grad
            ),
        }
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "hparams", None):
            extra.update({f"data/{k}": v for k, v in datamodule.hparams.items()})
        for logger in self.loggers:
            logger.log_hyperparams(extra)

    def forward(
        self, batch: Batch, return_assignments: bool = True, return_levels: bool = True
    ) -> ClassifierOutput:
        """The model on ``batch`` after the feature encoders, its floating tensors in the
        module's dtype (:func:`~diffpool.models.classify`'s arguments)."""
        dtype = self.dtype
        x = getattr(batch, "x", None)
        if isinstance(dtype, torch.dtype) and x is not None and x.is_floating_point():
            if x.dtype != dtype:
                batch = copy.copy(batch).apply(
                    lambda t: t.to(dtype) if t.is_floating_point() else t
                )
        if self.node_encoder is not None or self.edge_encoder is not None:
            batch = copy.copy(batch)
            if self.node_encoder is not None:
                batch.x = self.node_encoder(batch.x)
            if self.edge_encoder is not None and batch.get("edge_attr") is not None:
                batch.edge_attr = self.edge_encoder(batch.edge_attr)
        return classify(
            self.model, batch, return_assignments=return_assignments, return_levels=return_levels
        )

    def _note_nonfinite(self, stage: str, step: int, loss, task_loss, aux_loss) -> None:
        """Keep on the device the step and losses of ``stage``'s first non-finite loss."""
        found = torch.stack([t.detach().float().reshape(()) for t in (loss, task_loss, aux_loss)])
        first = self._nonfinite.get(stage)
        if first is None:
            first = torch.full((4,), -1.0, device=found.device)
        record = (first[0] < 0) & ~torch.isfinite(found[0])
        here = torch.cat([torch.full((1,), float(step), device=found.device), found])
        self._nonfinite[stage] = torch.where(record, here, first)

    def _stop_if_nonfinite(self, *stages: str) -> None:
        """Raise :class:`NonFiniteLossError` where a step of ``stages`` noted one."""
        for stage in stages:
            first = self._nonfinite.get(stage)
            if first is None:
                continue
            step, loss, task_loss, aux_loss = first.tolist()
            if step < 0:
                continue
            where = "step" if stage == "train" else "batch"
            raise NonFiniteLossError(
                f"the {STAGE_NAMES.get(stage, stage)} loss is {loss} at epoch "
                f"{self.current_epoch}, {where} {int(step)} ({self.task.loss} {task_loss}, "
                f"pooling losses {aux_loss}): lower the learning rate or check the input "
                "features for NaN/inf"
            )

    def _step(self, batch: Batch, stage: str, batch_idx: int) -> torch.Tensor:
        out = self(batch, return_assignments=False, return_levels=False)
        task = self.task
        target = task.target(batch.y, batch.num_graphs)
        task_loss = task.loss_value(out.logits, target)
        loss = task_loss + out.aux_loss
        step = self.global_step if stage == "train" else batch_idx
        self._note_nonfinite(stage, step, loss, task_loss, out.aux_loss)
        log = dict(
            batch_size=batch.num_graphs,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            add_dataloader_idx=False,
        )
        preds, truth = task.metric_input(out.logits.detach().float(), target)
        for name in task.metric_names:
            metric = self.stage_metrics[f"{stage}_{name}"]
            metric.update(preds, truth)
            shown = stage != "heldout" and name == task.metric
            self.log(f"{stage}/{name}", metric, prog_bar=shown, **log)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage == "train", **log)
        self.log(f"{stage}/{task.loss}", task_loss.detach(), **log)
        self.log(f"{stage}/aux_loss", out.aux_loss.detach(), **log)
        for level in range(out.link_loss.numel()):
            self.log(f"{stage}/link_loss_l{level}", out.link_loss[level].detach(), **log)
            self.log(f"{stage}/entropy_loss_l{level}", out.entropy_loss[level].detach(), **log)
        if stage == "test" and self._ogb is not None:
            self._ogb[0].append(target.detach().cpu())
            self._ogb[1].append(out.logits.detach().float().cpu())
        return loss

    #: where a checkpoint keeps the value a plateau scheduler watches at its epoch
    PLATEAU_KEY = "diffpool_plateau_metric"

    #: the plateau scheduler's value and the epoch of the checkpoint a fit resumes from
    _plateau_restored: tuple[Any, Any] = (None, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._plateau_restored = (checkpoint.get(self.PLATEAU_KEY), checkpoint.get("epoch"))

    def on_train_start(self) -> None:
        """Resumed: step a plateau scheduler that missed the step of the checkpoint's epoch.
        Lightning steps it after the epoch's checkpoints and, without the metric it watched
        (checkpoints hold none), not again on resume: a resumed run lowered its learning rate
        an epoch later than a run that never stopped."""
        (value, epoch), self._plateau_restored = self._plateau_restored, (None, None)
        if value is None or not isinstance(epoch, int) or self.trainer.ckpt_path is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            due = (epoch + 1) // config.frequency  # the steps after epochs 0 to `epoch`
            scheduler = config.scheduler
            if config.reduce_on_plateau and config.interval == "epoch":
                if getattr(scheduler, "last_epoch", None) == due - 1:
                    scheduler.step(value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights or statistics: the earlier checkpoint stays.
        Keep the value a plateau scheduler watches (:meth:`on_train_start`)."""
        bad = [
            name
            for name, tensor in checkpoint["state_dict"].items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
        if bad:
            raise NonFiniteLossError(
                f"the model's state is not finite: {', '.join(bad[:5])}"
                + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                + f" at epoch {self.current_epoch}; no checkpoint was written (the last one "
                "written stays): lower the learning rate"
            )
        if self.hparams.scheduler is not None:
            value = self.trainer.callback_metrics.get(self.hparams.scheduler_monitor)
            if value is not None:
                checkpoint[self.PLATEAU_KEY] = float(value)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # dropout follows from (seed, epoch, step) alone, wherever a resumed run restarts
        step = (self.hparams.seed * 1_000_003 + self.current_epoch) * 1_000_003 + batch_idx
        torch.manual_seed(step % (1 << 63))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, self.val_stages[dataloader_idx], batch_idx)

    # a non-finite loss is read after training steps, validation and testing, before checkpoints
    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._stop_if_nonfinite("train")

    def on_validation_epoch_end(self) -> None:
        self._stop_if_nonfinite(*self.val_stages)

    def on_train_epoch_end(self) -> None:
        self._stop_if_nonfinite("train")

    #: the test set's targets and outputs while an OGB evaluator scores it
    _ogb: tuple[list, list] | None = None

    def _evaluator(self):
        return getattr(self.trainer.datamodule, "evaluator", None)

    def on_test_epoch_start(self) -> None:
        self._ogb = ([], []) if self._evaluator() is not None else None

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        """Stop at a non-finite test loss; score the test set with the OGB evaluator."""
        self._stop_if_nonfinite("test")
        if self._ogb is None:
            return
        evaluator = self._evaluator()
        target, output = (torch.cat(parts) for parts in self._ogb)
        self._ogb = None
        if self.trainer.world_size > 1:  # every rank scored its share: score them all
            target, output = self._gather_rows(target), self._gather_rows(output)
        if self.task.name == "multiclass":  # OGB takes the class (ogbg-ppa)
            target, output = target.view(-1, 1), output.argmax(-1, keepdim=True)
        scores = evaluator.eval({"y_true": target, "y_pred": output})
        for name, value in scores.items():
            self.log(f"test/ogb_{name}", float(value), batch_size=len(target))

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``rows``, rank after rank, on the CPU. The ranks' shares of a set
        differ by a graph where its size is not a multiple of the ranks (ogbg-molhiv's test
        set: 4,113 graphs), and ``all_gather`` takes tensors of one shape: each rank's rows
        are padded to the largest share and the padding is cut off again."""
        # on the module's device: NCCL gathers CUDA tensors only (the rows were kept on the CPU)
        rows = rows.to(self.device)
        sizes = self.all_gather(torch.tensor([rows.size(0)], device=self.device))
        sizes = sizes.view(-1).tolist()
        padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
        padded[: rows.size(0)] = rows
        gathered = self.all_gather(padded).cpu()
        return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])

    #: whether :meth:`predict_step` also returns every level's assignment, hard clusters and
    #: pooled embeddings, per graph (``diffpool-predict assignments=true``)
    predict_assignments: bool = False

    def on_predict_epoch_start(self) -> None:
        self._predicted = 0  # graphs without a graph_id are numbered in the order they come

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per graph: ``graph_id`` (the batch's, else its position in the run), ``target``
        (or :obj:`None`), the task's predictions (:meth:`Task.predictions`) and ``task``;
        with :attr:`predict_assignments`, ``levels`` (:func:`~diffpool.models.unbatch_levels`)."""
        out = self(batch, return_assignments=self.predict_assignments)
        graphs = batch.num_graphs
        graph_id = getattr(batch, "graph_id", None)
        if graph_id is None:
            start = getattr(self, "_predicted", 0)
            graph_id = torch.arange(start, start + graphs, device=out.logits.device)
        self._predicted = getattr(self, "_predicted", 0) + graphs
        target = getattr(batch, "y", None)
        if target is not None:
            target = self.task.target(target, graphs).cpu()
        result = {
            "graph_id": graph_id.view(-1).cpu(),
            "target": target,
            **{k: v.cpu() for k, v in self.task.predictions(out.logits).items()},
            "task": self.task.name,
        }
        if self.predict_assignments:
            if not out.levels:
                raise ValueError(
                    f"{type(self.model).__name__} has no pooling levels: there are no "
                    "assignments to predict (a DiffPool model has them)"
                )
            result["levels"] = unbatch_levels(out, graphs)
        return result

    def configure_optimizers(self):
        optimizer = targets.build(self.hparams.optimizer, "optimizer", params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        spec = dict(self.hparams.scheduler)
        if spec.get("mode") == "auto":  # ReduceLROnPlateau's, as the callbacks' mode: auto
            spec["mode"] = self.task.mode_of(self.hparams.scheduler_monitor)
        scheduler = targets.build(spec, "scheduler", optimizer=optimizer)
        monitor = self.hparams.scheduler_monitor
        # a plateau scheduler watching validation steps after the epochs that validate (the
        # (n-1)-th of every n): it had no value after epoch 0, and the last one after the others
        try:
            every = self.trainer.check_val_every_n_epoch or 1
        except RuntimeError:  # not attached to a Trainer (called by hand)
            every = 1
        watches_validation = str(monitor).startswith(("val/", "heldout/"))
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": "epoch",
                "frequency": every if plateau and watches_validation else 1,
                "monitor": monitor,
            },
        }
