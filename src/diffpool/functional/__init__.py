"""The DiffPool operator as functions, and its building blocks: cluster budgets, masked
assignments, the auxiliary losses and the per-size-group products."""

from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
    masked_assignment,
)
from diffpool.functional.diff_pool import (
    LINK_LOSSES,
    AssignmentHead,
    dense_diff_pool,
    sparse_diff_pool,
)
from diffpool.functional.losses import (
    bce_edge_correction,
    bce_link_loss_sum,
    frobenius_link_loss,
    frobenius_link_loss_sq,
)
from diffpool.functional.output import DiffPoolOutput

__all__ = [
    "sparse_diff_pool",
    "dense_diff_pool",
    "AssignmentHead",
    "DiffPoolOutput",
    "LINK_LOSSES",
    "cluster_budget",
    "cluster_budgets",
    "cluster_mask_from_budgets",
    "masked_assignment",
    "bce_edge_correction",
    "bce_link_loss_sum",
    "frobenius_link_loss",
    "frobenius_link_loss_sq",
]
