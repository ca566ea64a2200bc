r"""Per-graph products over a sparse batch without padding every graph to the largest one.

The pooling products :math:`\mathbf{S}_g^\top \mathbf{Y}_g` cost :math:`O(N_g C^2)` per graph. A
batched matmul on the padded batch costs :math:`O(B \, N_{\max} C^2)` instead, which on D&D (mean
284 nodes, largest 5748) wastes most of the work. :class:`SizeBuckets` sorts the graphs by size
and groups those of similar size (:mod:`diffpool.functional._plan` decides which), so that
each group is padded only to its own largest graph: a few batched matmuls (one per group, never
one per graph). :class:`PaddedBatch` is the whole batch as one block. This module only moves
rows; the products themselves are :mod:`diffpool.functional.formulas`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from diffpool.utils.connectivity import CooAdjacency


class NodeBlocks:
    """A layout of a batch's node rows as padded ``[b, n, *]`` blocks of graphs: the blocks of
    a flat tensor, their masks, the way back to graph order, and the per-graph pooling products
    computed block by block. :class:`SizeBuckets` groups the graphs by size;
    :class:`PaddedBatch` is the whole batch as one block."""

    #: how many blocks the layout has
    num_blocks: int

    def blocks(self, flat: Tensor) -> list[Tensor]:
        """``[b, n_block, *]`` blocks of the flat ``[N, *]`` ``flat``, zero rows as padding."""
        raise NotImplementedError

    def masks(self) -> list[Tensor]:
        """``[b, n_block]`` bool masks of the real rows of every block."""
        raise NotImplementedError

    def reassemble(self, per_block: list[Tensor]) -> Tensor:
        """Per-block results ``[b, ...]`` back in graph order ``[B, ...]``."""
        raise NotImplementedError


def pad_slots(x: Tensor, adj: Tensor, num_slots: int) -> tuple[Tensor, Tensor]:
    """``x`` ``[B, C, F]`` and ``adj`` ``[B, C, C]`` zero-padded to ``num_slots`` clusters."""
    pad = num_slots - adj.size(-1)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        adj = torch.nn.functional.pad(adj, (0, pad, 0, pad))
    return x, adj


class BlockProducts(NamedTuple):
    r"""The blocks of one layout: per block of graphs, :math:`\mathbf{S}` ``[b, n, w]``,
    :math:`[\mathbf{Z} \,|\, \mathbf{A}\mathbf{S}]` ``[b, n, F + w]`` and, where the layout
    built it, the dense adjacency ``[b, n, n]``."""

    s: list[Tensor]
    rhs: list[Tensor]
    adj: list[Tensor] | None = None


def _no_features(s: Tensor, z: Tensor | None) -> Tensor:
    return s.new_zeros((s.size(0), 0)) if z is None else z


def sparse_products(blocks, adj, s: Tensor, z, widths: list[int], out_dtype=None):
    r"""Blocks of a flat ``[N, C]`` :math:`\mathbf{S}`, :math:`\mathbf{A}\mathbf{S}` a
    sparse-dense product: one gather of :math:`[\mathbf{S} | \mathbf{Z} |
    \mathbf{A}\mathbf{S}]` per block; block ``k`` keeps its first ``widths[k]`` slots
    (the others are zero for its graphs). ``out_dtype``: of the blocks (default: ``s``'s)."""
    with torch.autocast(device_type=s.device.type, enabled=False):
        adj_s = adj.matmul(s)
    if out_dtype is not None:
        s, adj_s = s.to(out_dtype), adj_s.to(out_dtype)
    num_slots, z = s.size(-1), _no_features(s, z)
    features = z.size(-1)
    # z and the first w columns of A s are contiguous in [s | z | A s]: split, not slicing,
    # for one backward concatenation instead of a zero-filled copy of the block per slice
    s_blocks, rhs_blocks = [], []
    for block, w in zip(blocks.blocks(torch.cat([s, z, adj_s], -1)), widths):
        s_block, _, rhs, _ = block.split([w, num_slots - w, features + w, num_slots - w], -1)
        s_blocks.append(s_block)
        rhs_blocks.append(rhs)
    return BlockProducts(s_blocks, rhs_blocks)


def dense_products(blocks, adj_blocks, s: Tensor, z, widths: list[int], out_dtype=None):
    r"""Blocks of a flat ``[N, C]`` :math:`\mathbf{S}`, :math:`\mathbf{A}\mathbf{S}` a
    batched matmul on the dense adjacency blocks. (``S`` and ``Z`` are laid out apart: one
    gather of ``[S | Z]`` and a split measured 6-8% slower on MUTAG and ENZYMES.)"""
    if out_dtype is not None:
        s = s.to(out_dtype)
    z = _no_features(s, z)
    s_blocks, rhs_blocks = [], []
    for s_block, z_block, adj, w in zip(blocks.blocks(s), blocks.blocks(z), adj_blocks, widths):
        s_block = s_block[..., :w]
        with torch.autocast(device_type=s.device.type, enabled=False):
            adj_s = torch.bmm(adj.to(s_block.dtype), s_block)
        s_blocks.append(s_block)
        rhs_blocks.append(torch.cat([z_block, adj_s.to(z_block.dtype)], -1))
    return BlockProducts(s_blocks, rhs_blocks, adj_blocks)


def bucket_products(blocks, adj_parts, s_parts: list[Tensor], z, out_dtype=None):
    r"""Blocks of an assignment held per bucket (``s_parts[k]`` ``[n_k, w_k]``), each
    :math:`\mathbf{A}_k\mathbf{S}_k` a sparse product on the bucket's own adjacency: the wide
    columns of the batch's largest budget are never built for the other buckets."""
    with torch.autocast(device_type=s_parts[0].device.type, enabled=False):
        adj_s = [a.matmul(p) for a, p in zip(adj_parts, s_parts)]
    if out_dtype is not None:
        s_parts = [p.to(out_dtype) for p in s_parts]
        adj_s = [p.to(out_dtype) for p in adj_s]
    s_blocks = blocks.local_blocks(s_parts)
    if z is None:
        return BlockProducts(s_blocks, blocks.local_blocks(adj_s))
    rhs = [torch.cat(pair, -1) for pair in zip(blocks.blocks(z), blocks.local_blocks(adj_s))]
    return BlockProducts(s_blocks, rhs)


class SizeBuckets(NodeBlocks):
    """Gather the rows of a flat ``[N, *]`` node tensor into size-grouped padded blocks.

    Args:
        ptr (torch.Tensor): ``[B + 1]`` node offsets of the graphs.
        counts (list[int]): nodes per graph (on the host).
        buckets (list[list[int]]): the graphs of every bucket
            (:func:`~diffpool.functional._plan.size_buckets`).
        heads (list[int]): the node count every bucket is padded to.
    """

    def __init__(self, ptr: Tensor, counts: list[int], buckets: list[list[int]], heads: list[int]):
        self.num_graphs = len(counts)
        self.num_nodes = int(sum(counts))
        self.counts, self.device = counts, ptr.device
        self.buckets, self.heads = buckets, heads
        self.num_blocks = len(buckets)
        self.index, self.valid = [], []
        for graphs, width in zip(self.buckets, self.heads):
            local = torch.arange(width, device=ptr.device)
            g = torch.tensor(graphs, device=ptr.device)
            rows = ptr[g].unsqueeze(-1) + local
            valid = local < torch.tensor([counts[i] for i in graphs], device=ptr.device)[:, None]
            self.index.append(torch.where(valid, rows, self.num_nodes))  # pad -> a zero row
            self.valid.append(valid)
        self.graphs, self.inverse = _group_index(self.buckets, ptr.device)
        #: the first node of every graph (on the host)
        self.starts = [0]
        for n in counts[:-1]:
            self.starts.append(self.starts[-1] + n)

    def rows(self) -> tuple[list[Tensor], Tensor]:
        """The flat indices of the nodes of every bucket's graphs (no padding), and the
        permutation that takes the concatenation of per-bucket rows back to node order.

        Built on the host from ``counts`` and copied to the device in one transfer."""
        starts = self.starts
        rows = [
            torch.cat([torch.arange(starts[g], starts[g] + self.counts[g]) for g in graphs])
            for graphs in self.buckets
        ]
        order = torch.cat(rows)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(self.num_nodes)
        *rows, inverse = (
            torch.cat([order, inverse])
            .to(self.device)
            .split([len(r) for r in rows] + [self.num_nodes])
        )
        return rows, inverse

    def masks(self) -> list[Tensor]:
        """``[b, n_bucket]`` bool masks of the real rows of every bucket's blocks."""
        return self.valid

    def local_blocks(self, parts: list[Tensor]) -> list[Tensor]:
        """``[b, n_bucket, *]`` blocks of per-bucket tensors ``parts[k]`` ``[n_k, *]``, whose
        rows are bucket ``k``'s nodes in the order of :meth:`rows` (zero rows as padding)."""
        return [_gather_rows(part, [index])[0] for part, index in zip(parts, self._local_index)]

    @functools.cached_property
    def _local_index(self) -> list[Tensor]:
        """:attr:`index` in each bucket's own node numbering (padding: one past its nodes)."""
        out = []
        for graphs, head, valid in zip(self.buckets, self.heads, self.valid):
            sizes = [self.counts[g] for g in graphs]
            offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).to(self.device)
            local = offsets.unsqueeze(-1) + torch.arange(head, device=self.device)
            out.append(torch.where(valid, local, sum(sizes)))
        return out

    def split_adjacency(self, adj):
        """The adjacency of every bucket's graphs, in the local node numbering of
        :meth:`rows` (a :class:`~diffpool.utils.connectivity.CooAdjacency` per bucket).

        ``adj`` must be coalesced (sorted by source) with every edge inside a graph: the
        edges of a graph are then one contiguous range."""
        starts = self.starts
        source = adj.index[0]
        bounds = torch.tensor(starts + [self.num_nodes], device=source.device)
        edge_starts = torch.searchsorted(source, bounds).tolist()
        ids, shifts, sizes, nodes = [], [], [], []
        for graphs in self.buckets:
            local, num_edges = 0, 0
            for g in graphs:
                first, last = edge_starts[g], edge_starts[g + 1]
                ids.append(torch.arange(first, last))
                shifts.append(torch.full((last - first,), starts[g] - local))
                local += self.counts[g]
                num_edges += last - first
            sizes.append(num_edges)
            nodes.append(local)
        ids = torch.cat(ids).to(source.device)
        index = adj.index.index_select(1, ids) - torch.cat(shifts).to(source.device)
        value = adj.value.index_select(0, ids)
        return [
            CooAdjacency(i, v, n)
            for i, v, n in zip(index.split(sizes, 1), value.split(sizes), nodes)
        ]

    def dense_adjacency(self, adj, batch: Tensor, buckets: list[int] | None = None) -> list[Tensor]:
        """The dense ``[b, n_bucket, n_bucket]`` adjacency blocks of the given buckets (all:
        :obj:`None`; in
        the layout of :meth:`blocks`, zero where a graph is shorter), from a
        :class:`~diffpool.utils.connectivity.CooAdjacency` whose edges stay inside graphs
        (coalesced or not: duplicate edges are summed).

        One ``index_add`` for all of them: edge :math:`i \to j` of graph ``g`` goes to
        ``base[g] + i * n + j`` of one flat buffer (``n`` its bucket's size), the edges of the
        other buckets to one slot past its end."""
        buckets = range(self.num_blocks) if buckets is None else buckets
        base, row_step, col_step = ([0] * self.num_graphs for _ in range(3))
        sizes, offset = [], 0
        for k in buckets:
            n = self.heads[k]
            for position, g in enumerate(self.buckets[k]):
                start = self.starts[g]
                base[g] = offset + position * n * n - start * (n + 1)
                row_step[g], col_step[g] = n, 1
            sizes.append(len(self.buckets[k]) * n * n)
            offset += sizes[-1]
        for g in range(self.num_graphs):
            if not col_step[g]:  # not asked for: the slot past the end
                base[g] = offset
        table = torch.tensor([base, row_step, col_step], device=adj.index.device)
        graph = batch.index_select(0, adj.index[0])
        base, row_step, col_step = table.index_select(1, graph)
        flat = base + adj.index[0] * row_step + adj.index[1] * col_step
        dense = adj.value.new_zeros(offset + 1).index_add_(0, flat, adj.value)
        return [
            part.view(len(self.buckets[k]), self.heads[k], self.heads[k])
            for k, part in zip(buckets, dense[:offset].split(sizes))
        ]

    def blocks(self, flat: Tensor) -> list[Tensor]:
        """``[b, n_bucket, *]`` blocks of ``flat``, zero rows where a graph is shorter."""
        if self.num_blocks == 1:  # autograd's own gather: one gradient buffer anyway
            return _gather_rows(flat, self.index)
        return list(_GatherRows.apply(flat, self.index))

    def reassemble(self, per_bucket: list[Tensor]) -> Tensor:
        """Stack per-bucket results ``[b, ...]`` back into graph order ``[B, ...]``, zero-padding
        trailing dimensions that a narrower bucket left short."""
        return _reassemble(per_bucket, self.graphs, self.inverse)


def _group_index(groups: list[list[int]], device) -> tuple[list[Tensor] | None, Tensor | None]:
    """The graph indices of every group (:obj:`None` when the groups, concatenated, are the
    graphs in order) and, for one group, the permutation back to graph order; on ``device``
    in one transfer."""
    order = [g for graphs in groups for g in graphs]
    if order == list(range(len(order))):
        return None, None
    order = torch.tensor(order)
    if len(groups) > 1:
        return list(order.to(device).split([len(g) for g in groups])), None
    both = torch.cat([order, torch.argsort(order)]).to(device)
    return [both[: len(order)]], both[len(order) :]


def _corner(t: Tensor, shape) -> Tensor:
    """The leading corner of ``t`` of ``shape`` in every dimension after the first."""
    for d in range(1, t.dim()):
        t = t.narrow(d, 0, shape[d])
    return t


class _Scatter(torch.autograd.Function):
    """Groups ``[b_k, ...]`` into the corners of a zero ``[B, ...]`` buffer, group ``k`` at
    the graph rows ``index[k]``; the backward pass gathers each group's corner of the
    gradient (no copy of the whole buffer, which on D&D is ``[20, 1437, 1437]``)."""

    @staticmethod
    def forward(ctx, shape, index, *parts):
        out = parts[0].new_zeros(shape)
        for rows, part in zip(index, parts):
            _corner(out, part.shape).index_copy_(0, rows, part)
        ctx.index, ctx.shapes = index, [part.shape for part in parts]
        return out

    @staticmethod
    def backward(ctx, grad):
        parts = [
            _corner(grad, shape).index_select(0, rows) for rows, shape in zip(ctx.index, ctx.shapes)
        ]
        return (None, None, *parts)


class _Gather(torch.autograd.Function):
    """The inverse of :class:`_Scatter`: the corners of ``t`` ``[B, ...]`` of the given
    ``shapes`` at the graph rows ``index[k]``; the backward pass writes the groups'
    gradients into one zero buffer."""

    @staticmethod
    def forward(ctx, t, index, shapes):
        ctx.index, ctx.shape = index, t.shape
        ctx.set_materialize_grads(False)
        return tuple(_corner(t, shape).index_select(0, rows) for rows, shape in zip(index, shapes))

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for rows, grad in zip(ctx.index, grads):
            if grad is not None:
                out = grad.new_zeros(ctx.shape) if out is None else out
                _corner(out, grad.shape).index_copy_(0, rows, grad)
        return out, None, None


class _GatherRows(torch.autograd.Function):
    """Padded ``[b, n, *]`` blocks of the rows ``index[k]`` of a flat ``[N, *]`` tensor, where
    the index ``N`` reads a zero row (padding).

    One function for all blocks, so that the backward pass adds every block's gradient into
    one zero buffer (autograd would allocate and add one per block: on D&D, with
    ``C = 1437`` cluster slots, most of the pooling's backward)."""

    @staticmethod
    def forward(ctx, flat, index):
        ctx.index, ctx.shape = index, flat.shape
        ctx.set_materialize_grads(False)
        return tuple(_gather_rows(flat, index))

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for rows, grad in zip(ctx.index, grads):
            if grad is not None:
                if out is None:
                    out = grad.new_zeros((ctx.shape[0] + 1, *ctx.shape[1:]))
                out.index_add_(0, rows.view(-1), grad.reshape(-1, *grad.shape[2:]))
        return None if out is None else out[:-1], None


def _gather_rows(flat: Tensor, index: list[Tensor]) -> list[Tensor]:
    extended = torch.cat([flat, flat.new_zeros((1,) + flat.shape[1:])])
    # index_select, not advanced indexing: its backward is a scatter-add, far cheaper on CPU
    # than the sorting accumulate of index_put.
    return [
        extended.index_select(0, rows.view(-1)).view(rows.shape + flat.shape[1:]) for rows in index
    ]


def _reassemble(
    per_group: list[Tensor], index: list[Tensor] | None, inverse: Tensor | None = None
) -> Tensor:
    """Per-group results ``[b_k, ...]`` padded with zeros (``False``) to the widest trailing
    sizes and put in graph order: group ``k`` holds the graphs ``index[k]`` (:obj:`None`:
    the groups, concatenated, are in graph order; ``inverse``: a single group's permutation
    back to graph order)."""
    first = per_group[0]
    shape = [max(r.size(d) for r in per_group) for d in range(1, first.dim())]
    if inverse is not None:  # one group, permuted: autograd's own gather
        return first.index_select(0, inverse)
    if index is None:
        if len(per_group) == 1 and list(first.shape[1:]) == shape:
            return first
        starts = torch.tensor([len(r) for r in per_group]).cumsum(0).tolist()
        index = [
            torch.arange(start - len(r), start, device=first.device)
            for r, start in zip(per_group, starts)
        ]
    total = sum(len(r) for r in per_group)
    return _Scatter.apply([total, *shape], index, *per_group)


class DenseGroups:
    """A padded dense batch (``[B, N, ...]``, ``[B, N, N]``) as groups of graphs of similar
    size, each cut to its own largest graph: the levels after the first pooling run group by
    group, so that a batch holding one large graph does not pad every other graph to it.

    Args:
        buckets (list[list[int]]): the graphs of every group
            (:func:`~diffpool.functional._plan.dense_groups`).
        heads (list[int]): the node count every group is cut to.
        device (torch.device): where the index tensors live.
    """

    def __init__(self, buckets: list[list[int]], heads: list[int], device):
        self.num_graphs = sum(len(graphs) for graphs in buckets)
        self.buckets, self.heads = buckets, heads
        self.num_groups = len(buckets)
        self.sizes = [len(graphs) for graphs in buckets]
        order = [g for graphs in buckets for g in graphs]
        self.index = torch.tensor(order, device=device).split(self.sizes)

    def split(self, t: Tensor, node_dims: int = 1) -> list[Tensor]:
        """The groups of ``t`` ``[B, N, ...]``, its first ``node_dims`` node dimensions (2
        for an adjacency) cut to each group's largest graph."""
        shapes = []
        for index, head in zip(self.index, self.heads):
            shape = list(t.shape)
            shape[0] = len(index)
            for d in range(1, 1 + node_dims):
                shape[d] = min(head, t.size(d))
            shapes.append(shape)
        return list(_Gather.apply(t, self.index, shapes))

    def reassemble(self, per_group: list[Tensor]) -> Tensor:
        """Per-group results ``[b_k, ...]`` back into graph order ``[B, ...]``, zero-padded."""
        return _reassemble(per_group, list(self.index))


class PaddedBatch(NodeBlocks):
    r"""The batch as one block padded to ``max_num_nodes``: static shapes and no host
    synchronisation (the ``"padded"`` layout, what ``torch.compile`` gets).

    Args:
        batch (torch.Tensor): ``[N]`` sorted graph index of every node.
        counts (torch.Tensor): ``[B]`` nodes per graph.
        max_num_nodes (int): the padded size :math:`N_{\max}`.
        mask (torch.Tensor): ``[B, N_max]`` bool mask of the real nodes.
    """

    num_blocks = 1

    def __init__(self, batch: Tensor, counts: Tensor, max_num_nodes: int, mask: Tensor):
        self.batch, self.max_num_nodes, self.mask = batch, max_num_nodes, mask
        self.batch_size = counts.numel()
        self.buckets = [list(range(self.batch_size))]
        starts = counts.cumsum(0) - counts
        #: every node's position in the flat ``[B * N_max]`` padded rows
        self.position = batch * max_num_nodes + (
            torch.arange(batch.numel(), device=batch.device) - starts.index_select(0, batch)
        )

    def masks(self) -> list[Tensor]:
        return [self.mask]

    def blocks(self, flat: Tensor) -> list[Tensor]:
        rows = self.batch_size * self.max_num_nodes
        out = flat.new_zeros((rows, *flat.shape[1:])).index_copy(0, self.position, flat)
        return [out.view(self.batch_size, self.max_num_nodes, *flat.shape[1:])]

    def dense_adjacency(self, adj, batch: Tensor, buckets=None) -> list[Tensor]:
        """The ``[B, N_max, N_max]`` adjacency (duplicate edges summed), in one
        ``index_add`` of static shape."""
        n = self.max_num_nodes
        source, target = self.position.index_select(0, adj.index[0]), adj.index[1]
        flat = source * n + self.position.index_select(0, target) % n
        dense = adj.value.new_zeros(self.batch_size * n * n).index_add_(0, flat, adj.value)
        return [dense.view(self.batch_size, n, n)]

    def reassemble(self, per_bucket: list[Tensor]) -> Tensor:
        return per_bucket[0]
