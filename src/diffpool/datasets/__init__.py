"""Datasets: a synthetic hierarchical-community task."""

from diffpool.datasets.synthetic import TOPOLOGIES, hierarchical_communities

__all__ = ["hierarchical_communities", "TOPOLOGIES"]
