"""Graph readouts of one level: max, mean or sum over the real nodes of each graph."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

READOUTS = ("max", "mean", "sum")

_SPARSE = {"max": global_max_pool, "mean": global_mean_pool, "sum": global_add_pool}


def check_readout(readout: str) -> str:
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return readout


def sparse_readout(readout: str, x: Tensor, batch: Tensor, batch_size: int) -> Tensor:
    """``[B, F]`` readout of the flat node features ``x`` ``[N, F]``."""
    return _SPARSE[readout](x, batch, size=batch_size)


def dense_readout(readout: str, x: Tensor, mask: Tensor) -> Tensor:
    """``[B, F]`` readout of ``x`` ``[B, N, F]`` over the nodes where ``mask`` ``[B, N]`` is
    true; padded rows never count (a graph without any real node reads out zeros)."""
    m = mask.unsqueeze(-1)
    if readout == "max":
        out = x.masked_fill(~m, float("-inf")).amax(dim=1)
        return torch.where(mask.any(-1, keepdim=True), out, 0.0)
    total = (x * m.to(x.dtype)).sum(dim=1)
    if readout == "sum":
        return total
    return total / mask.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)


def resolve_batch(x: Tensor, batch: Tensor | None, batch_size: int | None) -> tuple[Tensor, int]:
    """The ``batch`` vector and the number of graphs, for one graph when ``batch`` is None."""
    if batch is None:
        return torch.zeros(x.size(0), dtype=torch.long, device=x.device), 1
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor of graph indices, got {batch.dtype}")
    batch = batch.long()  # int32 works with the layers; PyG's readouts need int64
    if batch_size is None:
        batch_size = int(batch.max()) + 1 if batch.numel() else 0
    return batch, batch_size
