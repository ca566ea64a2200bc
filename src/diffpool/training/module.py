"""The LightningModule that trains any graph classifier of the package."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch
from torchmetrics.classification import MulticlassAccuracy

from diffpool.models.output import ClassifierOutput, classify, unbatch_levels

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


class GraphClassifier(LightningModule):
    r"""Trains a graph classifier: a model of :mod:`diffpool.models` (any variant of
    ``build_model``), called through :func:`~diffpool.models.classify`.

    The loss is

    .. math::
        \mathcal{L} = \mathrm{CE}(\hat{y}, y) + \sum_l \left(
        \lambda_{\mathrm{link}} \mathcal{L}^{(l)}_{\mathrm{link}} +
        \lambda_{\mathrm{ent}} \mathcal{L}^{(l)}_{\mathrm{ent}} \right),

    the coefficients being the model's ``link_loss_coef`` and ``entropy_loss_coef``.
    Logged under ``train/``, ``val/``, ``heldout/`` (the test fold, every epoch, for the
    ``paper`` protocol) and ``test/``: ``loss``, ``ce``, ``aux_loss``, ``acc`` and the
    per-level ``link_loss_l{l}`` and ``entropy_loss_l{l}``, always with
    ``batch_size=batch.num_graphs``. A loss that is not finite stops training with
    :class:`NonFiniteLossError`.

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
        in_channels (int): Node feature size.
        num_classes (int): Number of classes.
        max_num_nodes (int, optional): Largest graph of the dataset. (default: :obj:`None`)
        optimizer (Mapping, optional): Spec called with ``params``.
            (default: Adam, lr 1e-3)
        scheduler (Mapping, optional): Spec called with ``optimizer``, stepped every epoch.
            (default: :obj:`None`)
        scheduler_monitor (str, optional): Metric for schedulers such as
            ``ReduceLROnPlateau``. (default: :obj:`"val/acc"`)
        seed (int, optional): Base of the per-epoch seeds. (default: :obj:`0`)
        val_stages (Sequence[str], optional): The stage of each validation loader, in
            order: ``"val"`` (model selection) and ``"heldout"`` (the test fold, logged every
            epoch for the paper protocol). (default: :obj:`("val", "heldout")`)
    """

    def __init__(
        self,
        model: Mapping | torch.nn.Module,
        in_channels: int,
        num_classes: int,
        max_num_nodes: int | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        scheduler_monitor: str = "val/acc",
        seed: int = 0,
        val_stages: Sequence[str] = VAL_STAGES,
    ):
        super().__init__()
        network = model if isinstance(model, torch.nn.Module) else None
        model = None if network is not None else _spec(model, "model")
        optimizer = _spec(optimizer, "optimizer") or dict(DEFAULT_OPTIMIZER)
        scheduler = _spec(scheduler, "scheduler")
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
                scheduler_monitor=scheduler_monitor,
                seed=int(seed),
                val_stages=list(val_stages),
            ),
        )
        if network is None:
            network = instantiate(
                model,
                in_channels=in_channels,
                num_classes=num_classes,
                max_num_nodes=max_num_nodes,
            )
        self.model = network
        # keyed "<stage>_acc": ModuleDict keys must not shadow Module attributes ("train")
        self.accuracy = torch.nn.ModuleDict(
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro")
                for stage in ("train", *VAL_STAGES, "test")
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
        """Classify ``batch``. With ``return_assignments=False`` the levels' dense
        assignments ``s`` are neither built nor returned (what the training, validation and
        test steps do). The batch's floating tensors are taken in the module's dtype
        (``precision="64-true"`` doubles the module, not a PyG batch)."""
        dtype = self.dtype
        x = getattr(batch, "x", None)
        if isinstance(dtype, torch.dtype) and x is not None and x.is_floating_point():
            if x.dtype != dtype:
                batch = copy.copy(batch).apply(
                    lambda t: t.to(dtype) if t.is_floating_point() else t
                )
        return classify(self.model, batch, return_assignments=return_assignments)

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        out = self(batch, return_assignments=False)
        ce = F.cross_entropy(out.logits, batch.y)
        loss = ce + out.aux_loss
        if not torch.isfinite(loss):
            # training stops at the first non-finite loss of any stage: a diverged model's
            # epoch must not end, nor its checkpoint be written
            what = STAGE_NAMES.get(stage, stage)
            raise NonFiniteLossError(
                f"the {what} loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} (cross-entropy {ce.item()}, link "
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
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(out.logits.detach(), batch.y)
        self.log(f"{stage}/acc", accuracy, prog_bar=stage != "heldout", **log)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage == "train", **log)
        self.log(f"{stage}/ce", ce.detach(), **log)
        self.log(f"{stage}/aux_loss", out.aux_loss.detach(), **log)
        for level in range(out.link_loss.numel()):
            self.log(f"{stage}/link_loss_l{level}", out.link_loss[level].detach(), **log)
            self.log(f"{stage}/entropy_loss_l{level}", out.entropy_loss[level].detach(), **log)
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

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    #: whether :meth:`predict_step` also returns every level's assignment, hard clusters and
    #: pooled embeddings, per graph (``diffpool-predict assignments=true``)
    predict_assignments: bool = False

    def on_predict_epoch_start(self) -> None:
        self._predicted = 0  # graphs without a graph_id are numbered in the order they come

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per graph of ``batch``: ``graph_id`` (its index in the dataset where the batch
        carries one, as :class:`~diffpool.training.TUDataModule`'s do; else its position in
        the prediction run), ``target`` (the label, or :obj:`None`), ``prediction`` and
        ``probabilities`` ``[B, num_classes]``; with :attr:`predict_assignments`, ``levels``:
        per pooling level, lists over graphs of ``s`` ``[N_g, C_g]``, ``clusters`` ``[N_g]``
        and ``x`` ``[C_g, F]`` (see :func:`~diffpool.training.predict.write_assignments`)."""
        out = self(batch, return_assignments=self.predict_assignments)
        graphs = batch.num_graphs
        graph_id = getattr(batch, "graph_id", None)
        if graph_id is None:
            start = getattr(self, "_predicted", 0)
            graph_id = torch.arange(start, start + graphs, device=out.logits.device)
        self._predicted = getattr(self, "_predicted", 0) + graphs
        target = getattr(batch, "y", None)
        result = {
            "graph_id": graph_id.view(-1).cpu(),
            "target": None if target is None else target.view(-1).cpu(),
            "prediction": out.logits.argmax(-1).cpu(),
            "probabilities": out.logits.float().softmax(-1).cpu(),
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
