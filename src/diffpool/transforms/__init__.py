"""Dataset transforms: deterministic cluster assignments for DiffPool-Det."""

from diffpool.transforms.clustering import (
    CLUSTERERS,
    ClusterAssignment,
    partition,
    register_clusterer,
)

__all__ = ["ClusterAssignment", "CLUSTERERS", "partition", "register_clusterer"]
