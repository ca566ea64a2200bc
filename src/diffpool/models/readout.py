"""Graph readouts of one level: max, mean or sum over the real nodes of each graph."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

READOUTS = ("max", "mean", "sum")


class _GlobalMaxPool(torch.autograd.Function):
    """PyG's :func:`~torch_geometric.nn.global_max_pool` with a cheaper backward.

    The forward is PyG's. With torch's backward for ``scatter_reduce(amax, include_self=False)``
    the readout takes about 1.4 ms forward and backward on a batch of 20 graphs of up to 50
    nodes and 192 channels on one CPU thread (3-5% of a DiffPool training step there), mostly in
    a scatter of zeros into the gradient of the zeros the output starts from; 0.4-0.5 ms with
    this one (``benchmarks/readout.py``). The gradient is split evenly between the nodes that
    hold a graph's maximum, as torch does, with one difference: torch also counts the zeros the
    output starts from where the maximum is 0 (a graph whose nodes are all 0 in a channel gets
    n/(n+1) of the gradient), here each of the n nodes gets 1/n. The backward is differentiable
    again (a gradient penalty, Hessian-vector products), as torch's; under ``torch.func``'s
    transforms and forward AD PyG's runs (no jvp or vmap rule here).
    """

    @staticmethod
    def forward(x: Tensor, batch: Tensor, size: int) -> Tensor:
        return global_max_pool(x, batch, size=size)

    @staticmethod
    def setup_context(ctx, inputs, output):  # apart from forward: torch.func's transforms
        x, batch, _ = inputs
        ctx.save_for_backward(x, batch, output)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, batch, out = ctx.saved_tensors
        # 1.0 where a node holds its graph's maximum (a comparison written into a float tensor
        # directly: a bool result converted costs five times as much here)
        held = torch.eq(x, out.index_select(0, batch), out=torch.empty_like(x, dtype=grad.dtype))
        # an empty graph's count is 1, not 0: no node reads it, and the double backward of the
        # division would turn its zero gradient into NaN
        empty = grad.new_ones(grad.size(0), 1).index_fill_(0, batch, 0.0)
        count = torch.zeros_like(grad).index_add_(0, batch, held).add_(empty)
        return (grad / count).index_select(0, batch) * held, None, None


def _forward_or_batched() -> bool:
    """Whether a transform that needs a ``jvp`` or a ``vmap`` rule may run: any of
    ``torch.func``'s (inside ``grad``, a ``vmap`` or ``jvp`` around it cannot be told), forward
    AD."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


def _global_max_pool(x: Tensor, batch: Tensor, size: int) -> Tensor:
    # PyG's under torch.func's transforms and forward AD: its scatter_reduce has the jvp and
    # vmap rules this Function lacks (torch.func.hessian, per-sample gradients)
    if torch.is_grad_enabled() and x.requires_grad and not _forward_or_batched():
        return _GlobalMaxPool.apply(x, batch, size)
    return global_max_pool(x, batch, size=size)


_SPARSE = {"max": _global_max_pool, "mean": global_mean_pool, "sum": global_add_pool}


def check_readout(readout: str) -> str:
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return readout


def sparse_readout(readout: str, x: Tensor, batch: Tensor, batch_size: int) -> Tensor:
    """``[B, F]`` readout of the flat node features ``x`` ``[N, F]`` (``batch`` int64 or
    int32, as PyG allows)."""
    return _SPARSE[readout](x, batch.long(), size=batch_size)


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
    """The ``batch`` vector and the number of graphs, for one graph when ``batch`` is None (a
    ``batch_size`` given stands, as with a ``batch``: the layers name the empty graphs)."""
    if batch is None:
        batch_size = 1 if batch_size is None else batch_size
        return torch.zeros(x.size(0), dtype=torch.long, device=x.device), batch_size
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor of graph indices, got {batch.dtype}")
    batch = batch.long()  # int32 works with the layers; PyG's readouts need int64
    if batch_size is None:
        batch_size = int(batch.max()) + 1 if batch.numel() else 0
    return batch, batch_size
