r"""Per-graph products over a sparse batch without padding every graph to the largest one.

The pooling products :math:`\mathbf{S}_g^\top \mathbf{Y}_g` cost :math:`O(N_g C^2)` per graph. A
batched matmul on the padded batch costs :math:`O(B \, N_{\max} C^2)` instead, which on D&D (mean
284 nodes, largest 5748) wastes most of the work. :class:`SizeBuckets` sorts the graphs by size
and groups those within a factor ``max_waste`` of each other, so that each group is padded only
to its own largest graph: a few batched matmuls (one per group, never one per graph) and at most
``max_waste`` times the unpadded work.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bucket_graphs(counts: list[int], max_waste: float = 1.5) -> list[list[int]]:
    """Group graph indices, largest first, so that within a group the largest graph has at
    most ``max_waste`` times the nodes of the smallest."""
    order = sorted(range(len(counts)), key=lambda g: -counts[g])
    buckets: list[list[int]] = []
    for g in order:
        if buckets and counts[g] * max_waste >= counts[buckets[-1][0]]:
            buckets[-1].append(g)
        else:
            buckets.append([g])
    return buckets


class SizeBuckets:
    """Gather the rows of a flat ``[N, *]`` node tensor into size-grouped padded blocks.

    Args:
        ptr (torch.Tensor): ``[B + 1]`` node offsets of the graphs.
        counts (list[int]): nodes per graph (on the host).
        max_waste (float, optional): see :func:`bucket_graphs`. (default: :obj:`1.5`)
    """

    def __init__(self, ptr: Tensor, counts: list[int], max_waste: float = 1.5):
        self.num_graphs = len(counts)
        self.num_nodes = int(sum(counts))
        self.buckets = bucket_graphs(counts, max_waste)
        self.index = []
        for graphs in self.buckets:
            width = counts[graphs[0]]
            local = torch.arange(width, device=ptr.device)
            g = torch.tensor(graphs, device=ptr.device)
            rows = ptr[g].unsqueeze(-1) + local
            valid = local < torch.tensor([counts[i] for i in graphs], device=ptr.device)[:, None]
            self.index.append(torch.where(valid, rows, self.num_nodes))  # pad -> a zero row
        order = [g for graphs in self.buckets for g in graphs]
        self.inverse = torch.empty(len(order), dtype=torch.long, device=ptr.device)
        self.inverse[torch.tensor(order, device=ptr.device)] = torch.arange(
            len(order), device=ptr.device
        )

    def blocks(self, flat: Tensor, widths: list[int] | None = None) -> list[Tensor]:
        """``[b, n_bucket, *]`` blocks of ``flat`` (zero rows where a graph is shorter),
        keeping only the first ``widths[k]`` columns in bucket ``k`` when given."""
        extended = torch.cat([flat, flat.new_zeros((1,) + flat.shape[1:])])
        widths = widths or [flat.size(-1)] * len(self.index)
        return [extended[index, :w] for index, w in zip(self.index, widths)]

    def reassemble(self, per_bucket: list[Tensor]) -> Tensor:
        """Stack per-bucket results ``[b, ...]`` back into graph order ``[B, ...]``, zero-padding
        trailing dimensions that a narrower bucket left short."""
        shape = [max(r.size(d) for r in per_bucket) for d in range(1, per_bucket[0].dim())]
        padded = []
        for r in per_bucket:
            pad = []
            for d in reversed(range(1, r.dim())):
                pad += [0, shape[d - 1] - r.size(d)]
            padded.append(torch.nn.functional.pad(r, pad) if any(pad) else r)
        return torch.cat(padded)[self.inverse]

    def transpose_matmul(self, a: Tensor, b: Tensor, widths: list[int] | None = None) -> Tensor:
        r"""Per-graph :math:`\mathbf{A}_g^\top \mathbf{B}_g` for flat ``a`` [N, P], ``b`` [N, Q]:
        ``[B, P, Q]``. With ``widths``, bucket ``k`` uses only the first ``widths[k]`` columns of
        ``a`` (and of ``b`` when ``b`` has as many columns as ``a``): the others must be zero
        for its graphs, as unused cluster slots are."""
        b_widths = widths if widths is not None and b.size(-1) == a.size(-1) else None
        out = self.reassemble(
            [
                torch.bmm(x.transpose(1, 2), y)
                for x, y in zip(self.blocks(a, widths), self.blocks(b, b_widths))
            ]
        )
        return torch.nn.functional.pad(
            out, (0, b.size(-1) - out.size(-1), 0, a.size(-1) - out.size(-2))
        )


class PaddedBatch(SizeBuckets):
    """The same interface as :class:`SizeBuckets` with one block: the batch padded to
    ``max_num_nodes``. Static shapes and no host synchronisation (for ``torch.compile``)."""

    def __init__(self, batch: Tensor, batch_size: int, max_num_nodes: int):
        self.batch, self.batch_size, self.max_num_nodes = batch, batch_size, max_num_nodes

    def blocks(self, flat: Tensor, widths: list[int] | None = None) -> list[Tensor]:
        from torch_geometric.utils import to_dense_batch

        return [
            to_dense_batch(
                flat, self.batch, batch_size=self.batch_size, max_num_nodes=self.max_num_nodes
            )[0]
        ]

    def reassemble(self, per_bucket: list[Tensor]) -> Tensor:
        return per_bucket[0]
