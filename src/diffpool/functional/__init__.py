"""The DiffPool operator as functions, and its building blocks: cluster budgets, masked
assignments, the auxiliary losses and the per-size-group products.

:func:`sparse_diff_pool` and :func:`padded_diff_pool` return a :class:`DiffPoolOutput`;
:func:`dense_diff_pool` is a drop-in for :func:`torch_geometric.nn.dense_diff_pool` (its
arguments, its four return values, its normalisation)."""

from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
)
from diffpool.functional.diff_pool import (
    LINK_LOSSES,
    AssignmentHead,
    dense_diff_pool,
    padded_diff_pool,
    sparse_diff_pool,
)
from diffpool.functional.formulas import (
    LOSS_NORMALIZATIONS,
    batch_link_loss,
    bce_edge_correction,
    bce_link_loss_sum,
    coarsen,
    frobenius_link_loss,
    frobenius_link_loss_sq,
    link_terms,
    loss_divisors,
    masked_assignment,
    one_hot_assignment,
    residual_link_loss,
)
from diffpool.functional.output import DiffPoolOutput

__all__ = [
    "sparse_diff_pool",
    "padded_diff_pool",
    "dense_diff_pool",
    "AssignmentHead",
    "DiffPoolOutput",
    "LINK_LOSSES",
    "LOSS_NORMALIZATIONS",
    "cluster_budget",
    "cluster_budgets",
    "cluster_mask_from_budgets",
    "masked_assignment",
    "bce_edge_correction",
    "bce_link_loss_sum",
    "frobenius_link_loss",
    "frobenius_link_loss_sq",
    "residual_link_loss",
    "batch_link_loss",
    "loss_divisors",
    "coarsen",
    "link_terms",
    "one_hot_assignment",
]
