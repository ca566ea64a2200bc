"""The LightningModule that trains any graph classifier of the package."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch

from diffpool.models.output import ClassifierOutput, classify, unbatch_levels
from diffpool.training.tasks import Task

#: the stage of each validation loader (:meth:`TUDataModule.val_dataloader`): the validation
#: set and the test fold
VAL_STAGES = ("val", "heldout")


DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}

#: how an error names each stage's loss
STAGE_NAMES = {"train": "training", "val": "validation", "heldout": "test-fold", "test": "test"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


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


class GraphClassifier(LightningModule):
    r"""Trains a graph-level model for any task: a model of :mod:`diffpool.models` (any
    variant of ``build_model``), called through :func:`~diffpool.models.classify`.

    The loss is

    .. math::
        \mathcal{L} = \mathcal{L}_{\mathrm{task}}(\hat{y}, y) + \sum_l \left(
        \lambda_{\mathrm{link}} \mathcal{L}^{(l)}_{\mathrm{link}} +
        \lambda_{\mathrm{ent}} \mathcal{L}^{(l)}_{\mathrm{ent}} \right),

    the coefficients being the model's ``link_loss_coef`` and ``entropy_loss_coef``, and
    :math:`\mathcal{L}_{\mathrm{task}}` the task's (:class:`~diffpool.training.tasks.Task`:
    cross-entropy ``ce`` for ``multiclass``, BCE with logits ``bce`` for ``binary`` and
    ``multilabel`` (over the labels present: NaN is a missing label), ``l1`` or ``mse`` for
    ``regression``). Logged under ``train/``, ``val/``, ``heldout/`` (the test set, every
    epoch, for the ``paper`` protocol) and ``test/``: ``loss``, the task loss's name,
    ``aux_loss``, the task's metrics (``acc``; ``rocauc``, ``ap``; ``mae``, ``rmse``) and the
    per-level ``link_loss_l{l}`` and ``entropy_loss_l{l}``, always with
    ``batch_size=batch.num_graphs``. With a data module that has an OGB ``evaluator``, the
    test set is also scored by it, logged as ``test/ogb_<metric>`` (OGB's metric name). A
    loss that is not finite stops training with :class:`NonFiniteLossError`.

    Categorical features are embedded by a ``node_encoder`` / ``edge_encoder`` (``_target_``
    specs, e.g. OGB's ``AtomEncoder`` / ``BondEncoder``) trained with the model: the model
    takes their output width as ``in_channels`` / ``edge_dim`` (the module's ``out_channels``,
    else its last layer's ``embedding_dim`` / ``out_features``).

    Every training step reseeds torch from ``(seed, epoch, step)``, so that a run resumed from
    a checkpoint, wherever it stopped, draws the same dropout masks as one that never stopped.

    Lightning's tools work as usual: :attr:`lr` is the optimizer's learning rate (what
    ``Tuner.lr_find`` reads and sets), ``Tuner.scale_batch_size`` scales the data module's
    ``batch_size``, any ``precision`` runs (the batch's floating tensors follow the module's
    dtype, e.g. under ``"64-true"``), and the hyperparameters, the data module's and the
    parameter counts reach every logger when fitting starts.

    The network, optimizer and scheduler are given as Hydra ``_target_`` specs (plain
    mappings, e.g. the ``model`` config group), so the checkpoint stores only plain data and
    ``GraphClassifier.load_from_checkpoint(path)`` rebuilds everything (also under
    ``torch.load(weights_only=True)``).

    Args:
        model (Mapping or torch.nn.Module): Spec of the network, called with ``in_channels``,
            ``num_classes`` and ``max_num_nodes``, e.g. ``{"_target_":
            "diffpool.models.build_model", "variant": "diffpool", "num_levels": 2}``; or the
            network itself (then not stored in the checkpoint's hyperparameters: reload with
            ``GraphClassifier.load_from_checkpoint(path, model=<the same network>)``).
        in_channels (int): Node feature size (of ``x`` as the data gives it).
        num_classes (int): The output size: classes (multiclass), 1 (binary), labels
            (multilabel) or target values (regression).
        max_num_nodes (int, optional): Largest graph of the dataset. (default: :obj:`None`)
        optimizer (Mapping, optional): Spec called with ``params``.
            (default: Adam, lr 1e-3)
        scheduler (Mapping, optional): Spec called with ``optimizer``, stepped every epoch.
            (default: :obj:`None`)
        scheduler_monitor (str, optional): Metric for schedulers such as
            ``ReduceLROnPlateau``. (default: :obj:`None`: the task's ``val/<metric>``)
        seed (int, optional): Base of the per-epoch seeds. (default: :obj:`0`)
        val_stages (Sequence[str], optional): The stage of each validation loader, in
            order: ``"val"`` (model selection) and ``"heldout"`` (the test fold, logged every
            epoch for the paper protocol). (default: :obj:`("val", "heldout")`)
        task (str, optional): ``"multiclass"``, ``"binary"``, ``"multilabel"`` or
            ``"regression"``. (default: :obj:`"multiclass"`)
        metric (str, optional): The selection metric. (default: the task's first)
        loss (str, optional): ``"l1"`` or ``"mse"`` for regression. (default: the task's)
        edge_dim (int, optional): Edge feature size, for models whose encoders take edge
            features (passed to the model only when set). (default: :obj:`None`)
        node_encoder (Mapping, optional): Spec of the module embedding ``x``.
            (default: :obj:`None`)
        edge_encoder (Mapping, optional): Spec of the module embedding ``edge_attr``.
            (default: :obj:`None`)
    """

    def __init__(
        self,
        model: Mapping | torch.nn.Module,
        in_channels: int,
        num_classes: int,
        max_num_nodes: int | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        scheduler_monitor: str | None = None,
        seed: int = 0,
        val_stages: Sequence[str] = VAL_STAGES,
        task: str = "multiclass",
        metric: str | None = None,
        loss: str | None = None,
        edge_dim: int | None = None,
        node_encoder: Mapping | None = None,
        edge_encoder: Mapping | None = None,
    ):
        super().__init__()
        network = model if isinstance(model, torch.nn.Module) else None
        model = None if network is not None else _spec(model, "model")
        optimizer = _spec(optimizer, "optimizer") or dict(DEFAULT_OPTIMIZER)
        scheduler = _spec(scheduler, "scheduler")
        node_encoder = _spec(node_encoder, "node_encoder")
        edge_encoder = _spec(edge_encoder, "edge_encoder")
        self.task = Task(task, int(num_classes), metric=metric, loss=loss)
        unknown = set(val_stages) - set(VAL_STAGES)
        if not val_stages or unknown:
            raise ValueError(f"val_stages must be among {VAL_STAGES}, got {tuple(val_stages)}")
        self.save_hyperparameters(
            dict(
                model=model,
                in_channels=int(in_channels),
                num_classes=int(num_classes),
                max_num_nodes=None if max_num_nodes is None else int(max_num_nodes),
                optimizer=optimizer,
                scheduler=scheduler,
                scheduler_monitor=scheduler_monitor or f"val/{self.task.metric}",
                seed=int(seed),
                val_stages=list(val_stages),
                task=self.task.name,
                metric=self.task.metric,
                loss=self.task.loss,
                edge_dim=None if edge_dim is None else int(edge_dim),
                node_encoder=node_encoder,
                edge_encoder=edge_encoder,
            ),
        )
        self.node_encoder = instantiate(node_encoder) if node_encoder else None
        self.edge_encoder = instantiate(edge_encoder) if edge_encoder else None
        if network is None:
            facts = {}
            if edge_dim is not None:
                facts["edge_dim"] = _width(self.edge_encoder, int(edge_dim))
            network = instantiate(
                model,
                in_channels=_width(self.node_encoder, int(in_channels)),
                num_classes=num_classes,
                max_num_nodes=max_num_nodes,
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

    @property
    def lr(self) -> float:
        """The optimizer's learning rate (its spec's ``lr``; Adam's default 1e-3 without one).
        Setting it (as ``Tuner.lr_find`` does) changes the spec, so a checkpoint stores it."""
        return float(self.hparams.optimizer.get("lr", DEFAULT_OPTIMIZER["lr"]))

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams.optimizer["lr"] = float(value)

    def on_fit_start(self) -> None:
        """Log what Lightning does not: the data module's hyperparameters (under ``data/``)
        and the parameter counts."""
        extra: dict[str, Any] = {
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

    def forward(self, batch: Batch, return_assignments: bool = True) -> ClassifierOutput:
        """Run the model on ``batch`` (after the feature encoders). With
        ``return_assignments=False`` the levels' dense assignments ``s`` are neither built nor
        returned (what the training, validation and test steps do). The batch's floating
        tensors are taken in the module's dtype (``precision="64-true"`` doubles the module,
        not a PyG batch)."""
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
        return classify(self.model, batch, return_assignments=return_assignments)

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        out = self(batch, return_assignments=False)
        task = self.task
        target = task.target(batch.y, batch.num_graphs)
        task_loss = task.loss_value(out.logits, target)
        loss = task_loss + out.aux_loss
        if not torch.isfinite(loss):
            # training stops at the first non-finite loss of any stage: a diverged model's
            # epoch must not end, nor its checkpoint be written
            what = STAGE_NAMES.get(stage, stage)
            raise NonFiniteLossError(
                f"the {what} loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} ({task.loss} {task_loss.item()}, link "
                f"{out.link_loss.tolist()}, entropy {out.entropy_loss.tolist()}): lower the "
                "learning rate or check the input features for NaN/inf"
            )
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint that holds non-finite weights or statistics (e.g.
        infinite batch-norm variances with finite outputs): the earlier checkpoint stays, and
        ``resume=true`` continues from a sound state."""
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

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # every step's random draws (dropout) follow from (seed, epoch, step) alone, so that a
        # run resumed from any checkpoint (also one written at a validation's end, which
        # Lightning resumes mid-epoch) draws what a run that never stopped draws
        step = (self.hparams.seed * 1_000_003 + self.current_epoch) * 1_000_003 + batch_idx
        torch.manual_seed(step % (1 << 63))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, self.hparams.val_stages[dataloader_idx])

    #: the test set's targets and outputs while an OGB evaluator scores it
    _ogb: tuple[list, list] | None = None

    def _evaluator(self):
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        return getattr(datamodule, "evaluator", None)

    def on_test_epoch_start(self) -> None:
        self._ogb = ([], []) if self._evaluator() is not None else None

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Score the test set with the data's OGB evaluator (logged ``test/ogb_<metric>``)."""
        if self._ogb is None:
            return
        evaluator = self._evaluator()
        target, output = (torch.cat(parts) for parts in self._ogb)
        self._ogb = None
        if self.trainer.world_size > 1:  # every rank scored its share: score them all
            target = self.all_gather(target).flatten(0, 1).cpu()
            output = self.all_gather(output).flatten(0, 1).cpu()
        if self.task.name == "multiclass":  # OGB takes the class (ogbg-ppa)
            target, output = target.view(-1, 1), output.argmax(-1, keepdim=True)
        scores = evaluator.eval({"y_true": target, "y_pred": output})
        for name, value in scores.items():
            self.log(f"test/ogb_{name}", float(value), batch_size=len(target))

    #: whether :meth:`predict_step` also returns every level's assignment, hard clusters and
    #: pooled embeddings, per graph (``diffpool-predict assignments=true``)
    predict_assignments: bool = False

    def on_predict_epoch_start(self) -> None:
        self._predicted = 0  # graphs without a graph_id are numbered in the order they come

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per graph of ``batch``: ``graph_id`` (its index in the dataset where the batch
        carries one, as :class:`~diffpool.training.GraphDataModule`'s do; else its position
        in the prediction run), ``target`` (or :obj:`None`), ``prediction`` (the class; 0/1
        per label; the values) and, for classification, ``probabilities`` (``[B, classes]``
        softmax; ``[B, labels]`` sigmoid), and ``task``; with :attr:`predict_assignments`,
        ``levels``: per pooling level, lists over graphs of ``s`` ``[N_g, C_g]``,
        ``clusters`` ``[N_g]`` and ``x`` ``[C_g, F]`` (see
        :func:`~diffpool.training.predict.write_assignments`)."""
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
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": instantiate(self.hparams.scheduler, optimizer=optimizer),
                "interval": "epoch",
                "monitor": self.hparams.scheduler_monitor,
            },
        }
