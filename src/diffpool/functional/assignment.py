r"""Cluster budgets: how many cluster slots each graph's assignment may use (the softmax over
them is :func:`~diffpool.functional.formulas.masked_assignment`).

Two rules decide how many clusters a graph is pooled into:

* **fixed** (the paper's code): every graph gets the same :math:`C` clusters, with
  :math:`C = \lceil \mathrm{ratio} \cdot N_{\mathrm{ref}} \rceil` for a reference size
  :math:`N_{\mathrm{ref}}`, usually the dataset's largest graph;
* **per graph**: graph :math:`g` with :math:`N_g` nodes gets
  :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot N_g \rceil)` clusters. Its softmax runs over
  its own first :math:`C_g` cluster slots only; the other slots are exactly zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ``ratio * n`` is rounded to this many decimals before the ceiling, so that 0.1 * 30 gives 3
# clusters and not 4 (0.1 * 30 == 3.0000000000000004 in binary floating point).
_DECIMALS = 6


def cluster_budget(num_nodes: int, ratio: float) -> int:
    r"""Return :math:`\max(1, \lceil \mathrm{ratio} \cdot N \rceil)` for a node count ``N``:
    on the host what :func:`cluster_budgets` computes on the device, to the last bit (torch's
    rounding to decimals, ``nearbyint(x * 10**d) / 10**d``, not Python's ``round(x, d)``,
    which differs at half-points)."""
    scale = 10.0**_DECIMALS
    return max(1, math.ceil(round(num_nodes * ratio * scale) / scale))


def cluster_budgets(num_nodes: Tensor, ratio: float, num_clusters: int) -> Tensor:
    r"""Per-graph budgets :math:`C_g = \min(C, \max(1, \lceil \mathrm{ratio} \cdot N_g \rceil))`.

    Args:
        num_nodes (torch.Tensor): ``[B]`` number of nodes of every graph.
        ratio (float): the cluster ratio.
        num_clusters (int): the cap :math:`C`.

    Returns:
        torch.Tensor: ``[B]`` integer budgets.
    """
    scaled = torch.round(num_nodes.to(torch.float64) * ratio, decimals=_DECIMALS)
    return torch.ceil(scaled).long().clamp(min=1, max=num_clusters)


def cluster_mask_from_budgets(budgets: Tensor, num_slots: int) -> Tensor:
    """``[B, num_slots]`` bool mask, true for the first ``budgets[g]`` slots of graph ``g``."""
    slots = torch.arange(num_slots, device=budgets.device)
    return slots.unsqueeze(0) < budgets.unsqueeze(-1)
