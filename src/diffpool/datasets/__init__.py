"""Datasets: the TU benchmarks and OGB (offline first), any PyG dataset as graphs and its own
split, cross-validation splits and split files, a synthetic task.

The names are imported on first use (PEP 562), so that reading :mod:`.names` (the CLI's
configs do) does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffpool.datasets.names import BUNDLED
    from diffpool.datasets.ogb import load_ogb
    from diffpool.datasets.source import DataUnavailableError
    from diffpool.datasets.splits import FoldSplit, fold_split, load_split_file, stratified_folds
    from diffpool.datasets.synthetic import TOPOLOGIES, hierarchical_communities
    from diffpool.datasets.tu import load_tu, prepare_raw

_EXPORTS = {
    "BUNDLED": "names",
    "DataUnavailableError": "source",
    "load_ogb": "ogb",
    "FoldSplit": "splits",
    "fold_split": "splits",
    "load_split_file": "splits",
    "stratified_folds": "splits",
    "TOPOLOGIES": "synthetic",
    "hierarchical_communities": "synthetic",
    "load_tu": "tu",
    "prepare_raw": "tu",
}

__all__ = [
    "BUNDLED",
    "DataUnavailableError",
    "FoldSplit",
    "TOPOLOGIES",
    "fold_split",
    "hierarchical_communities",
    "load_ogb",
    "load_split_file",
    "load_tu",
    "prepare_raw",
    "stratified_folds",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
