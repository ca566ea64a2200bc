"""Graph-level tasks: what a target means, the loss, the output head and the metrics.

A :class:`Task` is one of :data:`TASKS`:

* ``multiclass``: a class index per graph; one output per class; cross-entropy (``ce``);
  metric ``acc``;
* ``binary``: 0 or 1 per graph; one output; BCE with logits (``bce``); metrics ``rocauc``,
  ``ap``, ``acc``;
* ``multilabel``: ``T`` labels per graph, 0, 1 or NaN (missing); ``T`` outputs; BCE over the
  labels present (``bce``); metrics ``rocauc``, ``ap`` (macro over labels);
* ``regression``: ``T`` values per graph; ``T`` outputs; ``l1`` (default) or ``mse``;
  metrics ``mae``, ``rmse``.

The first metric is the one a run selects its epoch on (the fair protocol's validation
metric), unless another of the task's metrics is asked for. :func:`infer_task` decides the
task from the targets where that is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TASKS = ("multiclass", "binary", "multilabel", "regression")

#: each task's metrics, the default selection metric first
METRICS = {
    "multiclass": ("acc",),
    "binary": ("rocauc", "ap", "acc"),
    "multilabel": ("rocauc", "ap"),
    "regression": ("mae", "rmse"),
}
#: metrics where lower is better
LOWER_IS_BETTER = frozenset({"mae", "rmse"})

LOSSES = {
    "multiclass": ("ce",),
    "binary": ("bce",),
    "multilabel": ("bce",),
    "regression": ("l1", "mse"),
}

#: OGB's task types (``dataset.task_type``) as tasks, by the number of tasks
OGB_TASK_TYPES = {"binary classification", "multiclass classification", "regression"}


class TargetError(ValueError):
    """The targets of a dataset do not fit the task (or no task can be told from them)."""


@dataclass(frozen=True)
class Task:
    """A graph-level task (see the module docstring).

    Args:
        name (str): One of :data:`TASKS`.
        num_outputs (int): The head size: classes (multiclass), 1 (binary), labels
            (multilabel) or target values (regression).
        metric (str, optional): The selection metric, one of the task's :data:`METRICS`.
            (default: the task's first)
        loss (str, optional): ``"l1"`` or ``"mse"`` for regression. (default: the task's first)
    """

    name: str
    num_outputs: int
    metric: str | None = None
    loss: str | None = None

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.name!r}")
        least = 2 if self.name == "multiclass" else 1
        if self.num_outputs < least:
            raise ValueError(
                f"a {self.name} task needs at least {least} outputs, got {self.num_outputs}"
            )
        if self.name == "binary" and self.num_outputs != 1:
            raise ValueError(f"a binary task has one output, got {self.num_outputs}")
        metric = self.metric or METRICS[self.name][0]
        if metric not in METRICS[self.name]:
            raise ValueError(
                f"metric {metric!r} is not one of the {self.name} task's {METRICS[self.name]}"
            )
        loss = self.loss or LOSSES[self.name][0]
        if loss not in LOSSES[self.name]:
            raise ValueError(
                f"loss {loss!r} is not one of the {self.name} task's {LOSSES[self.name]}"
            )
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "loss", loss)

    @property
    def higher_is_better(self) -> bool:
        """Whether the selection metric is better when higher (accuracy, AUC) or lower (MAE)."""
        return self.metric not in LOWER_IS_BETTER

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``: the selection metric's mode for Lightning's callbacks."""
        return "max" if self.higher_is_better else "min"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.name]

    # -- targets ----------------------------------------------------------------------------
    def target(self, y: Tensor, num_graphs: int) -> Tensor:
        """``y`` of a batch in the form the loss and the metrics take: class indices ``[B]``
        (multiclass) or floats ``[B, num_outputs]`` (NaN: a missing label)."""
        if self.name == "multiclass":
            return y.view(num_graphs).long()
        return y.reshape(num_graphs, self.num_outputs).float()

    def loss_value(self, output: Tensor, target: Tensor) -> Tensor:
        """The task's loss of the model's ``output`` ``[B, num_outputs]`` (a
        :meth:`target`): cross-entropy, BCE with logits over the labels present, L1 or MSE."""
        if self.name == "multiclass":
            return F.cross_entropy(output, target)
        if self.name in ("binary", "multilabel"):
            present = ~torch.isnan(target)
            if not bool(present.any()):  # a batch without any label: nothing to learn
                return output.sum() * 0.0
            return F.binary_cross_entropy_with_logits(output[present], target[present])
        if self.loss == "mse":
            return F.mse_loss(output, target)
        return F.l1_loss(output, target)

    def metrics(self):
        """Fresh torchmetrics of the task, keyed by name (:attr:`metric_names`): each is
        updated with :meth:`metric_input`."""
        from torchmetrics import classification as tmc
        from torchmetrics import regression as tmr

        n = self.num_outputs
        if self.name == "multiclass":
            return {"acc": tmc.MulticlassAccuracy(n, average="micro")}
        if self.name == "binary":
            return {
                "rocauc": tmc.BinaryAUROC(),
                "ap": tmc.BinaryAveragePrecision(),
                "acc": tmc.BinaryAccuracy(),
            }
        if self.name == "multilabel":
            # missing labels (NaN) are ignored: the target -1 is the ignored index
            return {
                "rocauc": tmc.MultilabelAUROC(n, average="macro", ignore_index=-1),
                "ap": tmc.MultilabelAveragePrecision(n, average="macro", ignore_index=-1),
            }
        return {"mae": tmr.MeanAbsoluteError(), "rmse": tmr.MeanSquaredError(squared=False)}

    def metric_input(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(preds, target)`` as the metrics of :meth:`metrics` take them: logits and class
        indices; probabilities and 0/1 (``-1`` where a label is missing); values."""
        if self.name == "multiclass":
            return output, target
        if self.name == "binary":
            return output.sigmoid().view(-1), target.view(-1).long()
        if self.name == "multilabel":
            return output.sigmoid(), torch.nan_to_num(target, nan=-1.0).long()
        return output, target

    def predictions(self, output: Tensor) -> dict[str, Tensor]:
        """What a prediction run returns per graph: ``prediction`` (the class; 0/1 per label;
        the values) and, for classification, ``probabilities``."""
        output = output.float()
        if self.name == "multiclass":
            return {"prediction": output.argmax(-1), "probabilities": output.softmax(-1)}
        if self.name in ("binary", "multilabel"):
            probabilities = output.sigmoid()
            return {"prediction": (probabilities > 0.5).long(), "probabilities": probabilities}
        return {"prediction": output}


def target_matrix(targets: list[Tensor] | Tensor) -> Tensor:
    """The targets of a dataset as ``[num_graphs, T]`` (``T`` values per graph)."""
    if isinstance(targets, Tensor):
        if targets.dim() == 0:
            return targets.view(1, 1)
        return targets.reshape(targets.size(0), -1 if targets.numel() else 1)
    return torch.stack([torch.as_tensor(t).reshape(-1) for t in targets])


def _is_integral(y: Tensor) -> bool:
    if not y.is_floating_point():
        return True
    finite = y[~torch.isnan(y)]
    return bool((finite == finite.round()).all())


def infer_task(
    targets: Tensor,
    task: str | None = None,
    declared: str | None = None,
    where: str = "the dataset",
) -> tuple[str, int, str]:
    """The task of the targets ``[num_graphs, T]`` (:func:`target_matrix`), its head size and
    why: ``task`` when given (checked against the targets), else ``declared`` (what the
    dataset says, e.g. OGB's task type), else from the targets where that is unambiguous:
    integer class labels (one per graph) are multiclass, floating targets (one per graph) are
    regression. Several targets per graph (multi-label or multi-target regression) need the
    task set.

    Raises:
        TargetError: targets that do not fit the task, NaN in a regression target, several
            targets per graph without a task, or no targets.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} (or None to infer it), got {task!r}")
    if targets.numel() == 0:
        raise TargetError(f"{where} has no targets (y) to learn")
    num_targets = targets.size(1)
    reason = "set"
    if task is None and declared is not None:
        task, reason = declared, "as the dataset declares"
    if task is None:
        if num_targets > 1:
            raise TargetError(
                f"{where} has {num_targets} targets per graph: multi-label classification or "
                "multi-target regression? set the task (data.task=multilabel or "
                "data.task=regression)"
            )
        if targets.is_floating_point() and not _is_integral(targets):
            task, reason = "regression", "floating targets"
        elif targets.is_floating_point():
            raise TargetError(
                f"{where} has floating targets with whole values only (e.g. "
                f"{targets.view(-1)[:3].tolist()}): class labels or values? set the task "
                "(data.task=multiclass, binary or regression)"
            )
        else:
            task, reason = "multiclass", "integer class labels"
    _check_targets(targets, task, where)
    if task == "multiclass":
        size = int(targets.max()) + 1
    elif task == "binary":
        size = 1
    else:
        size = num_targets
    return task, size, reason


def _check_targets(targets: Tensor, task: str, where: str) -> None:
    nan = torch.isnan(targets) if targets.is_floating_point() else torch.zeros_like(targets).bool()
    values = targets[~nan]
    if task == "regression":
        if bool(nan.any()):
            graph = int(nan.any(1).nonzero()[0])
            raise TargetError(
                f"{where} has NaN regression targets ({int(nan.any(1).sum())} graphs, e.g. "
                f"graph {graph}): drop those graphs or fill the values"
            )
        return
    if task == "multilabel":
        if not bool(((values == 0) | (values == 1)).all()):
            raise TargetError(
                f"{where} has multi-label targets other than 0, 1 and NaN (missing), e.g. "
                f"{values[(values != 0) & (values != 1)][:3].tolist()}"
            )
        return
    if targets.size(1) != 1:
        raise TargetError(
            f"{where} has {targets.size(1)} targets per graph, a {task} task takes one: "
            "data.task=multilabel or data.task=regression"
        )
    if bool(nan.any()):
        raise TargetError(f"{where} has NaN class labels: a {task} task needs every label")
    if not _is_integral(values) or bool((values < 0).any()):
        raise TargetError(
            f"{where} has targets that are not class labels (e.g. {values.view(-1)[:3].tolist()}):"
            f" a {task} task needs whole numbers from 0; use data.task=regression for values"
        )
    if task == "binary" and bool((values > 1).any()):
        raise TargetError(
            f"{where} has labels up to {int(values.max())}: a binary task takes 0 and 1 "
            "(data.task=multiclass for more classes)"
        )
    if task == "multiclass" and values.unique().numel() < 2:
        raise TargetError(f"{where} has one class only ({int(values.max())}): nothing to learn")


def ogb_task(task_type: str, num_tasks: int) -> str:
    """The task of an OGB graph-property dataset's ``task_type`` and ``num_tasks``."""
    if task_type not in OGB_TASK_TYPES:
        raise ValueError(
            f"OGB task type {task_type!r} is not a graph-level task this package trains "
            f"(it trains {sorted(OGB_TASK_TYPES)})"
        )
    if task_type == "binary classification":
        return "binary" if num_tasks == 1 else "multilabel"
    return "multiclass" if task_type == "multiclass classification" else "regression"
