"""Stratified k-fold cross-validation splits with a validation set off the training folds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def stratified_folds(labels: Tensor, num_folds: int, seed: int = 0) -> list[Tensor]:
    """Partition ``range(len(labels))`` into ``num_folds`` folds with the class proportions
    of the whole set (each class is shuffled with ``seed`` and dealt round-robin, continuing
    where the previous class stopped, so fold sizes differ by at most one).

    Returns:
        list[Tensor]: sorted index tensors, one per fold.
    """
    labels = torch.as_tensor(labels).view(-1)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if labels.numel() < num_folds:
        raise ValueError(f"cannot split {labels.numel()} graphs into {num_folds} folds")
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    start = 0
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=gen)]
        for i, index in enumerate(members.tolist()):
            folds[(start + i) % num_folds].append(index)
        start = (start + members.numel()) % num_folds
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def stratified_holdout(
    indices: Tensor, labels: Tensor, ratio: float, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split ``indices`` into (rest, held out) with about ``ratio`` of every class held out
    (at least one graph of every class that has two or more). ``ratio=0`` holds out none."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the validation ratio must be in [0, 1), got {ratio}")
    indices = torch.as_tensor(indices)
    if ratio == 0.0:
        return indices.sort().values, indices.new_empty(0)
    labels = torch.as_tensor(labels).view(-1)
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for cls in torch.unique(labels[indices]).tolist():
        members = indices[labels[indices] == cls]
        members = members[torch.randperm(members.numel(), generator=gen)]
        k = round(ratio * members.numel())
        k = min(max(k, 1 if members.numel() > 1 else 0), members.numel() - 1)
        held.append(members[:k])
        keep.append(members[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


@dataclass(frozen=True)
class FoldSplit:
    """Indices of one cross-validation fold: ``test`` is the fold, ``val`` is held out of the
    other folds, ``train`` is the rest."""

    train: Tensor
    val: Tensor
    test: Tensor


def fold_split(
    labels: Tensor, fold: int, num_folds: int = 10, seed: int = 0, val_ratio: float = 0.1
) -> FoldSplit:
    """The ``fold``-th split of stratified ``num_folds``-fold cross-validation (``val_ratio=0``:
    no validation set, every other fold trains)."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    folds = stratified_folds(labels, num_folds, seed)
    rest = torch.cat([f for i, f in enumerate(folds) if i != fold]).sort().values
    train, val = stratified_holdout(rest, labels, val_ratio, seed + 1 + fold)
    return FoldSplit(train=train, val=val, test=folds[fold])
