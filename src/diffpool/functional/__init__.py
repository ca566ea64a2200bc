"""Functional building blocks: cluster budgets, masked assignments and the auxiliary losses."""

from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
    masked_assignment,
)
from diffpool.functional.losses import (
    bce_edge_correction,
    bce_link_loss_sum,
    frobenius_link_loss_sq,
)

__all__ = [
    "cluster_budget",
    "cluster_budgets",
    "cluster_mask_from_budgets",
    "masked_assignment",
    "bce_edge_correction",
    "bce_link_loss_sum",
    "frobenius_link_loss_sq",
]
