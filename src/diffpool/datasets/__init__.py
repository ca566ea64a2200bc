"""Datasets: the TU benchmarks (offline first), cross-validation splits, a synthetic task."""

from diffpool.datasets.splits import FoldSplit, fold_split, stratified_folds
from diffpool.datasets.synthetic import TOPOLOGIES, hierarchical_communities
from diffpool.datasets.tu import BUNDLED, load_tu, prepare_raw

__all__ = [
    "BUNDLED",
    "FoldSplit",
    "TOPOLOGIES",
    "fold_split",
    "hierarchical_communities",
    "load_tu",
    "prepare_raw",
    "stratified_folds",
]
