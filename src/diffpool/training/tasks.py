"""Graph-level tasks: the target, loss, output head and metrics of each of :data:`TASKS`
(the table of the documentation's "Tasks and metrics"). :data:`METRICS` and :data:`LOSSES`
list each task's, the default first: the first metric selects a run's epoch unless another
of the task's is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchmetrics as tm
from torch import Tensor

TASKS = ("multiclass", "binary", "multilabel", "regression")
METRICS = {
    "multiclass": ("acc",),
    "binary": ("rocauc", "ap", "acc"),
    "multilabel": ("rocauc", "ap"),
    "regression": ("mae", "rmse"),
}
LOSSES = {"multiclass": ("ce",), "binary": ("bce",), "multilabel": ("bce",),
          "regression": ("l1", "mse")}  # fmt: skip
#: metrics where lower is better
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
#: what Lightning's ModelCheckpoint can watch besides the logged metrics: they only grow
INCREASING = frozenset({"step", "epoch"})


class LabelwiseRanking(tm.Metric):
    """ROC-AUC (``"rocauc"``) or average precision (``"ap"``) of probabilities ``[n, L]``
    against 0/1 targets (-1: missing), as OGB's evaluator computes them: the mean over the
    labels whose targets hold both classes; NaN where none does. torchmetrics' own scores a
    label with one class 0, so a test fold without positives would count as an AUC of 0 in a
    report's mean (its functional scores each label here)."""

    def __init__(self, kind: str):
        super().__init__()
        scores = tm.functional.classification
        self.score = {"rocauc": scores.binary_auroc, "ap": scores.binary_average_precision}[kind]
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.preds.append(preds.reshape(preds.size(0), -1))
        self.target.append(target.reshape(target.size(0), -1))

    def compute(self) -> Tensor:
        preds = tm.utilities.dim_zero_cat(self.preds)
        target = tm.utilities.dim_zero_cat(self.target)
        scores = []
        for label in range(target.size(-1)):
            present = target[:, label] >= 0
            t, p = target[present, label], preds[present, label]
            if t.numel() and bool(t.min() != t.max()):
                scores.append(self.score(p, t))
        return torch.stack(scores).mean() if scores else preds.new_tensor(float("nan"))


class TargetError(ValueError):
    """The targets of a dataset do not fit the task (or no task can be told from them)."""


@dataclass(frozen=True)
class Task:
    """A graph-level task.

    Args:
        name (str): One of :data:`TASKS`.
        num_outputs (int): The head size: classes, 1 (binary), labels or target values.
        metric (str, optional): The selection metric, one of the task's :data:`METRICS`.
            (default: the task's first)
        loss (str, optional): One of the task's :data:`LOSSES`. (default: the task's first)
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
        for key, table in (("metric", METRICS), ("loss", LOSSES)):
            value = getattr(self, key) or table[self.name][0]
            if value not in table[self.name]:
                raise ValueError(
                    f"{key} {value!r} is not one of the {self.name} task's {table[self.name]}"
                )
            object.__setattr__(self, key, value)

    @property
    def higher_is_better(self) -> bool:
        """Whether the selection metric is better higher (accuracy, AUC) or lower (MAE)."""
        return self.metric not in LOWER_IS_BETTER

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``, for Lightning's callbacks."""
        return "max" if self.higher_is_better else "min"

    def mode_of(self, monitor: str | None) -> str:
        """``mode: auto`` of a callback or scheduler that watches ``monitor``: the direction
        of that metric (``"min"`` for a loss and for MAE, ``"max"`` for accuracy or AUC, and for
        ``step`` and ``epoch``, which only grow), the
        task's :attr:`mode` for its own metric or none.

        Raises:
            ValueError: a metric whose direction is not known here (give ``mode``).
        """
        name = str(monitor or "").rpartition("/")[2]
        if not monitor or name == self.metric:
            return self.mode
        if monitor in INCREASING:  # ModelCheckpoint's own candidates: the latest is the max
            return "max"
        losses = {loss for names in LOSSES.values() for loss in names}
        if name in LOWER_IS_BETTER or name in losses or "loss" in name:
            return "min"
        if name in {metric for names in METRICS.values() for metric in names}:
            return "max"
        raise ValueError(
            f"mode: auto does not know whether {monitor!r} is better higher or lower: give "
            "mode: max or mode: min"
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.name]

    def target(self, y: Tensor, num_graphs: int) -> Tensor:
        """A batch's ``y`` as class indices ``[B]`` (multiclass) or floats ``[B, outputs]``."""
        if self.name == "multiclass":
            return y.view(num_graphs).long()
        return y.reshape(num_graphs, self.num_outputs).float()

    def loss_value(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss of ``output`` ``[B, outputs]`` against a :meth:`target` (BCE over the
        labels present; zero for a batch without any)."""
        if self.name == "multiclass":
            return F.cross_entropy(output, target)
        if self.name == "regression":
            return (F.mse_loss if self.loss == "mse" else F.l1_loss)(output, target)
        present = ~torch.isnan(target)
        if not bool(present.any()):
            return output.sum() * 0.0
        return F.binary_cross_entropy_with_logits(output[present], target[present])

    def metrics(self) -> dict[str, tm.Metric]:
        """Fresh torchmetrics keyed by :attr:`metric_names`, fed by :meth:`metric_input`."""
        make = {
            "mae": tm.MeanAbsoluteError,
            "rmse": lambda: tm.MeanSquaredError(squared=False),
            "acc": lambda: tm.Accuracy(task=self.name, num_classes=self.num_outputs),
            "rocauc": lambda: LabelwiseRanking("rocauc"),
            "ap": lambda: LabelwiseRanking("ap"),
        }
        return {key: make[key]() for key in self.metric_names}

    def metric_input(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(preds, target)`` for :meth:`metrics`: logits and classes; probabilities and
        0/1 (-1 where missing); values."""
        if self.name in ("binary", "multilabel"):
            return output.sigmoid(), torch.nan_to_num(target, nan=-1.0).long()
        return output, target

    def predictions(self, output: Tensor) -> dict[str, Tensor]:
        """``prediction`` per graph (the class; 0/1 per label; the values) and, for
        classification, ``probabilities``."""
        output = output.float()
        if self.name == "multiclass":
            return {"prediction": output.argmax(-1), "probabilities": output.softmax(-1)}
        if self.name == "regression":
            return {"prediction": output}
        probabilities = output.sigmoid()
        return {"prediction": (probabilities > 0.5).long(), "probabilities": probabilities}


def target_matrix(targets: list[Tensor] | Tensor) -> Tensor:
    """The targets of a dataset as ``[num_graphs, T]``."""
    if isinstance(targets, Tensor):
        if targets.dim() == 0:
            return targets.view(1, 1)
        return targets.reshape(targets.size(0), -1 if targets.numel() else 1)
    return torch.stack([torch.as_tensor(t).reshape(-1) for t in targets])


def _whole(y: Tensor) -> bool:
    return not y.is_floating_point() or bool((y == y.round())[~y.isnan()].all())


def infer_task(
    targets: Tensor,
    task: str | None = None,
    declared: str | None = None,
    where: str = "the dataset",
) -> tuple[str, int, str]:
    """The task of ``targets`` ``[num_graphs, T]``, its head size and why: ``task`` if given,
    else ``declared`` (e.g. OGB's), else integer labels are multiclass and floating values
    regression; several targets per graph need the task set.

    Raises:
        TargetError: targets that do not fit the task, or no task can be told from them.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} (or None to infer it), got {task!r}")
    if targets.numel() == 0:
        raise TargetError(f"{where} has no targets (y) to learn")
    reason = "set" if task else "as the dataset declares"
    task = task or declared
    if task is None:
        if targets.size(1) > 1:
            raise TargetError(
                f"{where} has {targets.size(1)} targets per graph: multi-label classification "
                "or multi-target regression? set the task (data.task=multilabel or "
                "data.task=regression)"
            )
        if not targets.is_floating_point():
            task, reason = "multiclass", "integer class labels"
        elif not _whole(targets):
            task, reason = "regression", "floating targets"
        else:
            raise TargetError(
                f"{where} has floating targets with whole values only (e.g. "
                f"{targets.view(-1)[:3].tolist()}): class labels or values? set the task "
                "(data.task=multiclass, binary or regression)"
            )
    _check_targets(targets, task, where)
    if task == "multiclass":
        return task, int(targets.max()) + 1, reason
    return task, 1 if task == "binary" else targets.size(1), reason


def _check_targets(targets: Tensor, task: str, where: str) -> None:
    nan = targets.isnan() if targets.is_floating_point() else torch.zeros_like(targets).bool()
    values = targets[~nan]
    if task == "regression" and bool(nan.any()):
        raise TargetError(
            f"{where} has NaN regression targets ({int(nan.any(1).sum())} graphs, e.g. graph "
            f"{int(nan.any(1).nonzero()[0])}): drop those graphs or fill the values"
        )
    if task == "multilabel" and not bool(((values == 0) | (values == 1)).all()):
        raise TargetError(
            f"{where} has multi-label targets other than 0, 1 and NaN (missing), e.g. "
            f"{values[(values != 0) & (values != 1)][:3].tolist()}"
        )
    if task in ("regression", "multilabel"):
        return
    if targets.size(1) != 1:
        raise TargetError(
            f"{where} has {targets.size(1)} targets per graph, a {task} task takes one: "
            "data.task=multilabel or data.task=regression"
        )
    if bool(nan.any()):
        hint = (" (data.task=multilabel takes missing labels, NaN, also one label per graph: "
                "its loss and metrics leave them out)") if task == "binary" else ""  # fmt: skip
        raise TargetError(f"{where} has NaN class labels: a {task} task needs every label{hint}")
    bad = (values != values.round()) | (values < 0) if values.is_floating_point() else values < 0
    if bool(bad.any()):
        raise TargetError(
            f"{where} has targets that are not class labels (e.g. {values[bad][:3].tolist()}):"
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
    tasks = {"binary classification": "binary" if num_tasks == 1 else "multilabel",
             "multiclass classification": "multiclass", "regression": "regression"}  # fmt: skip
    if task_type not in tasks:
        raise ValueError(
            f"OGB task type {task_type!r} is not a graph-level task this package trains "
            f"(it trains {sorted(tasks)})"
        )
    return tasks[task_type]
