"""Tasks: inference from the targets, the losses and the metrics against hand computations,
and the errors for targets that do not fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffpool.training.tasks import TargetError, Task, infer_task, ogb_task, target_matrix

NAN = float("nan")


def _update(task: Task, output, target):
    metrics = task.metrics()
    preds, truth = task.metric_input(output, task.target(target, len(output)))
    return {name: float(m(preds, truth)) for name, m in metrics.items()}


@pytest.mark.parametrize(
    "y, expected",
    [
        (torch.tensor([0, 2, 1, 2]), ("multiclass", 3, "integer class labels")),
        (torch.tensor([0.5, -1.25, 3.0]), ("regression", 1, "floating targets")),
    ],
)
def test_inferred_where_unambiguous(y, expected):
    assert infer_task(target_matrix(y)) == expected


def test_declared_and_set_tasks():
    y = torch.tensor([[0, 1, 1], [1, 0, 1]])
    assert infer_task(y, declared="multilabel")[:2] == ("multilabel", 3)
    assert infer_task(torch.tensor([[1], [0]]), task="binary")[:2] == ("binary", 1)
    assert ogb_task("binary classification", 1) == "binary"
    assert ogb_task("binary classification", 128) == "multilabel"
    assert ogb_task("regression", 1) == "regression"
    with pytest.raises(ValueError, match="subtoken prediction"):
        ogb_task("subtoken prediction", 1)


@pytest.mark.parametrize(
    "y, task, message",
    [
        (torch.tensor([[0.0, 1.0, NAN], [1.0, 0.0, 1.0]]), None, "set the task"),
        (torch.tensor([[0, 1], [1, 1]]), "multiclass", "takes one"),
        (torch.tensor([0.2, 1.7]), "multiclass", "not class labels"),
        (torch.tensor([0, 1, 2]), "binary", "takes 0 and 1"),
        (torch.tensor([[0.0, 2.0], [1.0, 0.0]]), "multilabel", "other than 0, 1 and NaN"),
        (torch.tensor([0.5, NAN, 1.0]), "regression", "NaN regression targets.*graph 1"),
        (torch.tensor([1.0, 0.0, 1.0]), None, "whole values only"),
        (torch.tensor([1, 1, 1]), None, "one class only"),
        (torch.empty(0, 1), None, "no targets"),
    ],
)
def test_targets_that_do_not_fit_are_named(y, task, message):
    with pytest.raises(TargetError, match=message):
        infer_task(target_matrix(y), task)


def test_task_settings_are_checked():
    with pytest.raises(ValueError, match="metric 'mae' is not one of"):
        Task("binary", 1, metric="mae")
    with pytest.raises(ValueError, match="loss 'mse' is not one of"):
        Task("multiclass", 3, loss="mse")
    with pytest.raises(ValueError, match="task must be one of"):
        Task("ranking", 1)
    assert Task("regression", 2).mode == "min" and Task("binary", 1).mode == "max"


def test_multiclass_accuracy_and_loss_by_hand():
    task = Task("multiclass", 3)
    output = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 2, 0, 1])
    assert _update(task, output, y) == {"acc": 0.5}  # graphs 0 and 1 right
    expected = -sum(torch.log_softmax(output, -1)[i, c] for i, c in enumerate(y.tolist())) / 4
    assert torch.isclose(task.loss_value(output, task.target(y, 4)), expected)


def test_binary_auc_ap_accuracy_by_hand():
    task = Task("binary", 1)
    # sigmoid is monotone: the ranking of the logits is that of the probabilities
    probabilities = torch.tensor([0.1, 0.4, 0.35, 0.8])
    output = torch.logit(probabilities).view(-1, 1)
    y = torch.tensor([[0], [0], [1], [1]])
    scores = _update(task, output, y)
    # positive pairs ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); wrong: 0.35 < 0.4
    assert scores["rocauc"] == pytest.approx(3 / 4)
    # precision at each positive, by rank: 0.8 (1/1), 0.35 (2/3)
    assert scores["ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["acc"] == pytest.approx(3 / 4)  # 0.35 is called 0
    bce = -(torch.log(1 - probabilities[:2]).sum() + torch.log(probabilities[2:]).sum()) / 4
    assert torch.isclose(task.loss_value(output, task.target(y, 4)), bce, atol=1e-6)


def test_multilabel_ignores_missing_labels_by_hand():
    task = Task("multilabel", 2)
    p = torch.tensor([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.9]])
    y = torch.tensor([[1.0, 0.0], [0.0, NAN], [1.0, 1.0], [NAN, 1.0]])
    output = torch.logit(p)
    scores = _update(task, output, y)
    # label 0 (graphs 0-2; graph 3 missing): positives 0.9, 0.6 above the negative 0.3: AUC 1
    # label 1 (graphs 0, 2, 3; graph 1 missing): positives 0.4, 0.9 above the negative 0.2
    assert scores["rocauc"] == pytest.approx(1.0)
    y2 = torch.tensor([[1.0, 1.0], [0.0, NAN], [1.0, 0.0], [NAN, 1.0]])
    # label 1 now: positives 0.2, 0.9 against the negative 0.4: one pair of two right
    assert _update(task, output, y2)["rocauc"] == pytest.approx((1.0 + 0.5) / 2)
    present = ~torch.isnan(y)
    bce = -(y * p.log() + (1 - y) * (1 - p).log())[present].mean()
    assert torch.isclose(task.loss_value(output, task.target(y, 4)), bce, atol=1e-6)
    # a batch without any label: zero loss, still a graph of the output
    empty = task.loss_value(output, torch.full((4, 2), NAN))
    assert empty.item() == 0.0


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_regression_mae_rmse_by_hand(loss):
    task = Task("regression", 1, loss=loss)
    output = torch.tensor([[1.0], [2.0], [0.5]])
    y = torch.tensor([1.5, 2.0, -0.5])
    scores = _update(task, output, y)
    assert scores["mae"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert scores["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1.0) / 3))
    value = task.loss_value(output, task.target(y, 3)).item()
    assert value == pytest.approx(0.5 if loss == "l1" else 1.25 / 3)


def test_predictions_per_task():
    out = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    multiclass = Task("multiclass", 2).predictions(out)
    assert multiclass["prediction"].tolist() == [1, 0]
    assert torch.allclose(multiclass["probabilities"].sum(-1), torch.ones(2))
    multilabel = Task("multilabel", 2).predictions(out)
    assert multilabel["prediction"].tolist() == [[0, 1], [1, 0]]
    assert "probabilities" not in Task("regression", 2).predictions(out)


def test_ranking_metrics_score_the_labels_with_both_classes_as_ogb_does():
    """A label whose targets hold one class has no ROC-AUC or AP: OGB's evaluator leaves it
    out of the mean, and a binary split without positives scores NaN (not torchmetrics' 0,
    which a report would average with the other folds)."""
    metrics = pytest.importorskip("sklearn.metrics")  # what OGB's evaluator scores with

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 3, generator=gen)
    y = (torch.rand(30, 3, generator=gen) < 0.5).float()
    y[:, 1] = 0.0  # one class only
    y[torch.rand(30, 3, generator=gen) < 0.2] = float("nan")
    task = Task("multilabel", 3)
    for name, score in (("rocauc", metrics.roc_auc_score), ("ap", metrics.average_precision_score)):
        metric = task.metrics()[name]
        metric.update(*task.metric_input(logits, y))
        present = [~y[:, k].isnan() for k in (0, 2)]  # label 1 has one class: left out
        expected = [score(y[m, k], logits[m, k]) for k, m in zip((0, 2), present)]
        assert float(metric.compute()) == pytest.approx(sum(expected) / 2, abs=1e-6)
    binary = Task("binary", 1)
    for name in ("rocauc", "ap"):
        metric = binary.metrics()[name]
        metric.update(*binary.metric_input(logits[:, :1], torch.zeros(30, 1)))
        assert math.isnan(float(metric.compute()))


def test_a_bad_class_label_is_named_among_good_ones():
    labels = torch.tensor([[0.0], [1.0], [2.0], [2.5], [0.0], [-1.0]])
    with pytest.raises(TargetError, match=r"not class labels \(e.g. \[2.5, -1.0\]\)"):
        infer_task(labels, "multiclass", None, "data")


def test_a_binary_task_with_missing_labels_is_pointed_to_multilabel():
    """One label per graph with missing ones (an OGB-format dataset of one binary task, NaN
    where unmeasured): the binary task needs every label; the error says that multilabel
    takes them, and multilabel with one label does."""
    y = target_matrix(torch.tensor([[1.0], [NAN], [0.0], [1.0]]))
    with pytest.raises(TargetError, match="data.task=multilabel takes missing labels"):
        infer_task(y, declared="binary")
    assert infer_task(y, "multilabel")[:2] == ("multilabel", 1)
    task = Task("multilabel", 1)
    output, target = torch.tensor([[2.0], [5.0], [-1.0], [0.5]]), task.target(y, 4)
    expected = F.binary_cross_entropy_with_logits(output[[0, 2, 3]], target[[0, 2, 3]])
    assert task.loss_value(output, target) == pytest.approx(float(expected))


@pytest.mark.parametrize("name", ["multiclass", "regression"])
def test_mode_auto_of_step_and_epoch_keeps_the_latest(name):
    """``callbacks.model_checkpoint.monitor=step`` (or ``epoch``, ModelCheckpoint's own
    candidates) with ``mode: auto``: they only grow, so "max" keeps the latest checkpoint,
    whatever the task's direction (MAE's "min" kept the first)."""
    task = Task(name, 2 if name == "multiclass" else 1)
    assert task.mode_of("step") == task.mode_of("epoch") == "max"
    assert task.mode_of("val/loss") == "min"
    with pytest.raises(ValueError, match="give mode"):
        task.mode_of("val/my_score")
