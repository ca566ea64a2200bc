"""Stratified k-fold cross-validation splits with a validation set off the training folds,
and published split files (:func:`load_split_file`)."""

from __future__ import annotations

import json
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffpool.utils.files import read_regular

#: the largest split file read, in bytes (Errica et al.'s largest are a few MiB): a split file
#: is a regular file no larger (``/dev/zero`` would fill the memory, a pipe hang the run)
MAX_SPLIT_FILE_BYTES = 64 * 2**20


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


def _fold_of(payload, file: Path, fold: int, inner: int) -> dict[str, list]:
    """The train / val / test lists of one fold of a split file's content."""
    if isinstance(payload, dict):
        if fold != 0:
            raise ValueError(f"{file} holds one split, not folds: fold must be 0, got {fold}")
        missing = [k for k in ("train", "test") if k not in payload]
        if missing or not ({"val", "validation"} & set(payload)):
            raise ValueError(
                f"{file}: a split file is a {{'train', 'val', 'test'}} object or a list of "
                "folds (Errica et al.'s layout); this object has keys "
                f"{sorted(payload)}"
            )
        return {
            "train": payload["train"],
            "val": payload.get("val", payload.get("validation")),
            "test": payload["test"],
        }
    if not isinstance(payload, list) or not payload:
        raise ValueError(f"{file}: expected a list of folds or a train/val/test object")
    if not 0 <= fold < len(payload):
        raise ValueError(f"{file} has {len(payload)} folds: fold must be in [0, {len(payload)})")
    entry = payload[fold]
    selection = entry.get("model_selection") if isinstance(entry, dict) else None
    if not isinstance(selection, list) or "test" not in entry:
        raise ValueError(
            f"{file}, fold {fold}: expected 'test' and 'model_selection' (a list of "
            "{'train', 'validation'}), as in Errica et al.'s split files"
        )
    if not 0 <= inner < len(selection):
        raise ValueError(
            f"{file}, fold {fold} has {len(selection)} model-selection splits: inner must be "
            f"in [0, {len(selection)})"
        )
    chosen = selection[inner]
    if not isinstance(chosen, dict) or not {"train", "validation"} <= set(chosen):
        raise ValueError(
            f"{file}, fold {fold}: model-selection split {inner} must be an object with "
            f"'train' and 'validation', got {reprlib.repr(chosen)}"
        )
    return {"train": chosen["train"], "val": chosen["validation"], "test": entry["test"]}


def _read_split_file(file: Path):
    if not file.exists():
        raise FileNotFoundError(
            f"split file {file} not found"
            + (
                f" (a relative path is read from the working directory, {Path.cwd()}: give "
                "it from where the run started, or its absolute path)"
                if not file.is_absolute()
                else ""
            )
        )
    data = read_regular(file, MAX_SPLIT_FILE_BYTES, "split file")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # nested deep
        raise ValueError(f"{file} is not valid JSON ({type(err).__name__}: {err})") from err


def split_file_folds(file: str | os.PathLike) -> int:
    """How many folds a split file holds (1 for a single train/val/test object)."""
    payload = _read_split_file(Path(file))
    return len(payload) if isinstance(payload, list) else 1


def load_split_file(
    file: str | os.PathLike, num_graphs: int, fold: int = 0, inner: int = 0
) -> FoldSplit:
    """One fold of a published split file, checked against a dataset of ``num_graphs``.

    Two layouts are read: Errica et al.'s fair-comparison splits (a JSON list with one entry
    per fold, ``{"test": [...], "model_selection": [{"train": [...], "validation": [...]},
    ...]}``; ``inner`` picks the model-selection split) and a single
    ``{"train": [...], "val": [...], "test": [...]}`` object (``"validation"`` is read as
    ``"val"``; ``fold`` must be 0).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file of at most :data:`MAX_SPLIT_FILE_BYTES` (64 MiB), not
            JSON, not one of the layouts, a fold out of range, an index outside
            ``[0, num_graphs)``, a graph in two of train / val / test, or an empty test or
            training set; the message names the file and the fold.
    """
    file = Path(file)
    parts = _fold_of(_read_split_file(file), file, fold, inner)
    where = f"{file}, fold {fold}"
    split = {}
    for name, values in parts.items():
        values = [] if values is None else values
        # whole numbers only: json reads 2.7 as a float and true as a bool, which a tensor
        # would take as graphs 2 and 1
        if not isinstance(values, list) or not all(type(v) is int for v in values):
            raise ValueError(
                f"{where}: {name} must be a list of graph indices (JSON integers), got "
                f"{reprlib.repr(values)}"
            )
        try:
            split[name] = torch.tensor(values, dtype=torch.long)
        except (OverflowError, RuntimeError, ValueError) as err:  # past int64
            raise ValueError(f"{where}: {name} names a graph past int64 ({err})") from err
    return checked_split(split, num_graphs, where)


def checked_split(parts: dict[str, Tensor], num_graphs: int, where: str) -> FoldSplit:
    """``{"train", "val", "test"}`` graph indices as a :class:`FoldSplit`, sorted.

    Raises:
        ValueError: an index outside ``[0, num_graphs)``, a graph named twice or in two of
            the sets, or an empty test or training set; the message starts with ``where``.
    """
    split = {}
    for name in ("train", "val", "test"):
        indices = parts[name]
        outside = indices[(indices < 0) | (indices >= num_graphs)]
        if outside.numel():
            raise ValueError(
                f"{where}: {name} names graph {int(outside[0])}, outside the dataset's "
                f"{num_graphs} graphs ({outside.numel()} such indices)"
            )
        if indices.unique().numel() != indices.numel():
            raise ValueError(f"{where}: {name} names a graph twice")
        split[name] = indices.sort().values
    for name in ("test", "train"):
        if split[name].numel() == 0:
            raise ValueError(f"{where}: the {name} set is empty")
    for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
        shared = set(split[a].tolist()) & set(split[b].tolist())
        if shared:
            raise ValueError(
                f"{where}: {len(shared)} graphs are in both {a} and {b} (e.g. graph {min(shared)})"
            )
    return FoldSplit(train=split["train"], val=split["val"], test=split["test"])
