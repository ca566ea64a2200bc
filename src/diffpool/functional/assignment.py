r"""Cluster budgets and the masked softmax that turns pooling logits into an assignment.

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
    r"""Return :math:`\max(1, \lceil \mathrm{ratio} \cdot N \rceil)` for a node count ``N``."""
    return max(1, math.ceil(round(ratio * num_nodes, _DECIMALS)))


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


def masked_assignment(logits: Tensor, slot_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""Softmax over the allowed cluster slots and the entropy of every row.

    Args:
        logits (torch.Tensor): ``[..., C]`` pooling logits.
        slot_mask (torch.Tensor, optional): bool mask broadcastable to ``logits``; false slots get
            probability exactly zero. Every row must allow at least one slot.

    Returns:
        (torch.Tensor, torch.Tensor): the assignment :math:`\mathbf{S}` (``[..., C]``) and the
        entropy :math:`H(\mathbf{S}_i) = -\sum_c S_{ic} \log S_{ic}` (``[...]``), computed from
        ``log_softmax`` so that no :math:`\log 0` ever appears. Both are float32 or wider.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if slot_mask is not None:
        logits = logits.masked_fill(~slot_mask, float("-inf"))
    log_s = torch.log_softmax(logits, dim=-1)
    s = log_s.exp()
    if slot_mask is not None:
        log_s = log_s.masked_fill(~slot_mask, 0.0)
    entropy = -(s * log_s).sum(dim=-1)
    return s, entropy
