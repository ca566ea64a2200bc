r"""Per-graph products over a sparse batch without padding every graph to the largest one.

The pooling products :math:`\mathbf{S}_g^\top \mathbf{Y}_g` cost :math:`O(N_g C^2)` per graph. A
batched matmul on the padded batch costs :math:`O(B \, N_{\max} C^2)` instead, which on D&D (mean
284 nodes, largest 5748) wastes most of the work. :class:`SizeBuckets` sorts the graphs by size
and groups those within a factor ``max_waste`` of each other, so that each group is padded only
to its own largest graph: a few batched matmuls (one per group, never one per graph) and at most
``max_waste`` times the unpadded work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from diffpool.utils.connectivity import CooAdjacency

# Fixed cost of one more size bucket (a gather, a batched matmul, their backward and the
# bookkeeping), in multiply-adds of padded work. Buckets whose padding to the previous bucket's
# size costs less than this are merged: on small graphs a few kernel launches more would cost
# more than the padding they save. Measured on CPU; the exact value is not critical.
BUCKET_OVERHEAD_MACS = 1 << 21

# Fixed cost of holding one bucket's assignment at its own width (a softmax, a sparse product
# and the bookkeeping of its own), against the unused columns of one flat [N, C] assignment.
# Measured on CPU, per-graph budgets, summed step times per-bucket vs flat: D&D batches
# without the two largest graphs 12.1 vs 14.1 s; PROTEINS, ENZYMES and synthetic N_max 100 to
# 400 equal within noise; a batch that forms one bucket always stays flat.
PER_BUCKET_ASSIGNMENT_MACS = 1 << 17

# Up to this many multiply-adds for the dense products A_g S_g of all size buckets, the
# adjacency goes into dense [b, n, n] blocks (one index_add, duplicate edges summed) instead of
# a coalesced sparse matrix: on small graphs the sort of the coalesce and the sparse product's
# fixed cost are most of the pooling. Measured on CPU, one thread: see ``dense_blocks_pay``.
DENSE_BLOCK_MACS = 1 << 22


def bucket_graphs(
    counts: list[int],
    max_waste: float = 1.5,
    row_cost: Callable[[int], int] | None = None,
    overhead: int = BUCKET_OVERHEAD_MACS,
) -> list[list[int]]:
    """Group graph indices, largest first, so that within a group the largest graph has at
    most ``max_waste`` times the nodes of the smallest.

    With ``row_cost`` (the multiply-adds per padded row of a group headed by a graph of ``n``
    nodes), a group is then merged into the previous, larger one when the padding this adds
    costs at most ``overhead`` multiply-adds."""
    order = sorted(range(len(counts)), key=lambda g: -counts[g])
    buckets: list[list[int]] = []
    for g in order:
        if buckets and counts[g] * max_waste >= counts[buckets[-1][0]]:
            buckets[-1].append(g)
        else:
            buckets.append([g])
    if row_cost is None:
        return buckets
    merged = buckets[:1]
    for graphs in buckets[1:]:
        head = counts[merged[-1][0]]
        padding = sum(head - counts[g] for g in graphs) * row_cost(head)
        saved = sum(counts[g] for g in graphs) * (row_cost(head) - row_cost(counts[graphs[0]]))
        if padding + saved <= overhead:
            merged[-1].extend(graphs)
        else:
            merged.append(graphs)
    return merged


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

    def pool(
        self,
        s: Tensor,
        z: Tensor,
        adj_s: Tensor,
        widths: list[int] | None = None,
        factored: list[bool] | None = None,
    ) -> tuple[Tensor, Tensor | list[Tensor | None], list[Tensor]]:
        r"""Per-graph :math:`\mathbf{S}_g^\top \mathbf{Z}_g` and
        :math:`\mathbf{S}_g^\top (\mathbf{A}\mathbf{S})_g` with one gather and one batched
        matmul per bucket.

        Args:
            s (torch.Tensor): ``[N, C]`` flat assignment.
            z (torch.Tensor): ``[N, F]`` flat embeddings.
            adj_s (torch.Tensor): ``[N, C]`` the product :math:`\mathbf{A}\mathbf{S}`.
            widths (list[int], optional): bucket ``k`` uses only the first ``widths[k]``
                clusters; the others must be zero in ``s`` for its graphs, as unused cluster
                slots are. (default: all :math:`C`)
            factored (list[bool], optional): the buckets whose :math:`\mathbf{S}_g^\top
                (\mathbf{A}\mathbf{S})_g` is not built (their adjacency stays factored, see
                :mod:`diffpool.functional._factored`). ``adj`` is then the list of every
                bucket's ``[b, C, C]`` block, :obj:`None` for those. (default: :obj:`None`)

        Returns:
            ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]`` (or its blocks) and the
            ``[b, n_bucket, width]`` blocks of ``s`` (for the Gram norm).
        """
        num_slots, features = s.size(-1), z.size(-1)
        widths = widths or [num_slots] * self.num_blocks
        # [s | z | A s]: z and the first w columns of A s are contiguous, so one gather and
        # one matmul per bucket give both products.
        flat = torch.cat([s, z, adj_s], -1)
        s_blocks, x_blocks, adj_blocks = [], [], []
        for k, (block, w) in enumerate(zip(self.blocks(flat), widths)):
            # split, not slicing: one backward concatenation instead of a zero-filled copy of
            # the block per slice.
            s_block, _, rhs, _ = block.split([w, num_slots - w, features + w, num_slots - w], -1)
            if factored is not None and factored[k]:
                x_block = torch.bmm(s_block.transpose(1, 2), rhs[..., :features])
                adj_block = None
            else:
                x_block, adj_block = torch.bmm(s_block.transpose(1, 2), rhs).split(
                    [features, w], -1
                )
            s_blocks.append(s_block)
            x_blocks.append(x_block)
            adj_blocks.append(adj_block)
        if factored is not None:
            return self.reassemble(x_blocks), adj_blocks, s_blocks
        x, adj = _pad_slots(self.reassemble(x_blocks), self.reassemble(adj_blocks), num_slots)
        return x, adj, s_blocks


def _pad_slots(x: Tensor, adj: Tensor, num_slots: int) -> tuple[Tensor, Tensor]:
    """``x`` ``[B, C, F]`` and ``adj`` ``[B, C, C]`` zero-padded to ``num_slots`` clusters."""
    pad = num_slots - adj.size(-1)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        adj = torch.nn.functional.pad(adj, (0, pad, 0, pad))
    return x, adj


class SizeBuckets(NodeBlocks):
    """Gather the rows of a flat ``[N, *]`` node tensor into size-grouped padded blocks.

    Args:
        ptr (torch.Tensor): ``[B + 1]`` node offsets of the graphs.
        counts (list[int]): nodes per graph (on the host).
        max_waste (float, optional): see :func:`bucket_graphs`. (default: :obj:`1.5`)
        row_cost (callable, optional): see :func:`bucket_graphs`. (default: :obj:`None`)
    """

    def __init__(
        self,
        ptr: Tensor,
        counts: list[int],
        max_waste: float = 1.5,
        row_cost: Callable[[int], int] | None = None,
    ):
        self.num_graphs = len(counts)
        self.num_nodes = int(sum(counts))
        self.counts, self.device = counts, ptr.device
        self.buckets = bucket_graphs(counts, max_waste, row_cost)
        if len(self.buckets) == 1:  # one block in graph order: no permutation to undo
            self.buckets = [list(range(len(counts)))]
        self.num_blocks = len(self.buckets)
        self.heads = [max(counts[g] for g in graphs) for graphs in self.buckets]
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

    def per_bucket_pays(self, widths: list[int], num_slots: int, num_edges: int) -> bool:
        """Whether an assignment held per bucket at its own width (:meth:`pool_buckets`) is
        worth its per-bucket bookkeeping: the columns the flat ``[N, num_slots]`` form would
        carry beyond each bucket's width (softmax, gathers and ``A S``: about the average
        degree plus one operation each) cost more than :data:`PER_BUCKET_ASSIGNMENT_MACS` per
        bucket. Small graphs (one bucket, or narrow budgets) stay flat."""
        if self.num_blocks < 2:
            return False
        nodes = [sum(self.counts[g] for g in graphs) for graphs in self.buckets]
        unused = sum(n * (num_slots - w) for n, w in zip(nodes, widths))
        per_column = 1 + num_edges / max(1, self.num_nodes)
        return unused * per_column > PER_BUCKET_ASSIGNMENT_MACS * self.num_blocks

    def dense_blocks_pay(self, widths: list[int]) -> bool:
        r"""Whether the products :math:`\mathbf{A}_g \mathbf{S}_g` are cheaper from dense
        ``[b, n, n]`` adjacency blocks (:meth:`dense_adjacency`, :meth:`pool_dense`) than
        from a sparse matrix: their multiply-adds, over all buckets, at most
        :data:`DENSE_BLOCK_MACS`."""
        sizes = zip(self.buckets, self.heads, widths)
        macs = sum(len(graphs) * head * head * w for graphs, head, w in sizes)
        return macs <= DENSE_BLOCK_MACS

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

    def dense_adjacency(self, adj, batch: Tensor, buckets: list[int]) -> list[Tensor]:
        """The dense ``[b, n_bucket, n_bucket]`` adjacency blocks of the given buckets (in
        the layout of :meth:`blocks`, zero where a graph is shorter), from a
        :class:`~diffpool.utils.connectivity.CooAdjacency` whose edges stay inside graphs
        (coalesced or not: duplicate edges are summed).

        One ``index_add`` for all of them: edge :math:`i \to j` of graph ``g`` goes to
        ``base[g] + i * n + j`` of one flat buffer (``n`` its bucket's size), the edges of the
        other buckets to one slot past its end."""
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

    def pool_dense(
        self, s: Tensor, z: Tensor, adj_blocks: list[Tensor], widths: list[int] | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        r""":meth:`pool` with the adjacency as the dense blocks of :meth:`dense_adjacency`
        (all buckets): :math:`(\mathbf{A}\mathbf{S})_g` is a batched matmul per bucket.

        Returns:
            ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]``, the ``[b, n_bucket, width]`` blocks
            of ``s`` and those of :math:`\mathbf{A}\mathbf{S}`.
        """
        num_slots, features = s.size(-1), z.size(-1)
        widths = widths or [num_slots] * self.num_blocks
        s_blocks, adj_s_blocks, x_blocks, pooled = [], [], [], []
        for block, adj, w in zip(self.blocks(torch.cat([s, z], -1)), adj_blocks, widths):
            s_block, _, z_block = block.split([w, num_slots - w, features], -1)
            with torch.autocast(device_type=s.device.type, enabled=False):
                adj_s = torch.bmm(adj.to(s_block.dtype), s_block)
            # one product and a split, as in pool: the backward pass then sees one contiguous
            # gradient (a sum's expanded gradient sends bmm down its slow per-graph loop)
            x_block, pooled_block = torch.bmm(
                s_block.transpose(1, 2), torch.cat([z_block, adj_s.to(z_block.dtype)], -1)
            ).split([features, w], -1)
            s_blocks.append(s_block)
            adj_s_blocks.append(adj_s)
            x_blocks.append(x_block)
            pooled.append(pooled_block)
        x, adj = _pad_slots(self.reassemble(x_blocks), self.reassemble(pooled), num_slots)
        return x, adj, s_blocks, adj_s_blocks

    def pool_buckets(
        self, s_parts: list[Tensor], z: Tensor, adj_s_parts: list[Tensor], num_slots: int
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """:meth:`pool` of an assignment given per bucket, ``s_parts[k]`` ``[n_k, w_k]`` in
        the order of :meth:`rows` (and ``adj_s_parts[k]``, its product with the bucket's
        adjacency): the wide columns of the batch's largest budget are never built for the
        other buckets."""
        s_blocks = self.local_blocks(s_parts)
        x_blocks, adj_blocks = [], []
        for s_block, z_block, adj_s_block in zip(
            s_blocks, self.blocks(z), self.local_blocks(adj_s_parts)
        ):
            s_t = s_block.transpose(1, 2)
            x_blocks.append(torch.bmm(s_t, z_block))
            adj_blocks.append(torch.bmm(s_t, adj_s_block))
        x, adj = _pad_slots(self.reassemble(x_blocks), self.reassemble(adj_blocks), num_slots)
        return x, adj, s_blocks

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
    size, each cut to its own largest graph (:func:`bucket_graphs`): the levels after the
    first pooling run group by group, so that a batch holding one large graph does not pad
    every other graph to it.

    Args:
        counts (list[int]): real nodes per graph (on the host).
        device (torch.device): where the index tensors live.
        max_waste (float, optional): see :func:`bucket_graphs`. (default: :obj:`1.5`)
        row_cost (callable, optional): see :func:`bucket_graphs`. (default: :obj:`None`)
    """

    def __init__(self, counts: list[int], device, max_waste: float = 1.5, row_cost=None):
        buckets = bucket_graphs(counts, max_waste, row_cost)
        self._set(buckets, [max(1, counts[graphs[0]]) for graphs in buckets], device)

    @classmethod
    def of(cls, buckets: list[list[int]], heads: list[int], device) -> DenseGroups:
        """Given groups: ``buckets[k]`` the graphs of group ``k``, padded to ``heads[k]``."""
        groups = cls.__new__(cls)
        groups._set(buckets, heads, device)
        return groups

    def _set(self, buckets: list[list[int]], heads: list[int], device) -> None:
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
    """The batch as one block, padded to ``max_num_nodes``: static shapes and no host
    synchronisation (for ``torch.compile``)."""

    num_blocks = 1

    def __init__(self, batch: Tensor, batch_size: int, max_num_nodes: int, mask: Tensor):
        self.batch, self.batch_size, self.max_num_nodes = batch, batch_size, max_num_nodes
        self.mask = mask

    def masks(self) -> list[Tensor]:
        return [self.mask]

    def blocks(self, flat: Tensor) -> list[Tensor]:
        from torch_geometric.utils import to_dense_batch

        return [
            to_dense_batch(
                flat, self.batch, batch_size=self.batch_size, max_num_nodes=self.max_num_nodes
            )[0]
        ]

    def reassemble(self, per_bucket: list[Tensor]) -> Tensor:
        return per_bucket[0]
