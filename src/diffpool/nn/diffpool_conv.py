"""The first DiffPool level: a sparse PyG mini-batch in, a coarsened dense batch out."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from diffpool.functional.assignment import cluster_budget, masked_assignment
from diffpool.functional.losses import (
    bce_edge_correction,
    bce_link_loss_sum,
    gram_squared_norm,
)
from diffpool.functional.packing import PaddedBatch, SizeBuckets
from diffpool.nn.base import DiffPoolBase
from diffpool.nn.encoders import GNNEncoder
from diffpool.nn.output import DiffPoolOutput
from diffpool.utils.connectivity import to_coo_adjacency
from diffpool.utils.validation import (
    check_assignment,
    check_batch,
    check_connectivity,
    check_features,
    check_max_num_nodes,
)


def _accepts_edge_weight(module: torch.nn.Module | None) -> bool:
    if module is None:
        return False
    try:
        return "edge_weight" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


class DiffPoolConv(DiffPoolBase):
    r"""The differentiable pooling operator from the `"Hierarchical Graph Representation
    Learning with Differentiable Pooling" <https://arxiv.org/abs/1806.08804>`_ paper, on a
    sparse PyG mini-batch.

    .. math::
        \mathbf{Z} &= \mathrm{GNN}_{\mathrm{embed}}(\mathbf{A}, \mathbf{X}), \qquad
        \mathbf{S} = \mathrm{softmax}(\mathrm{GNN}_{\mathrm{pool}}(\mathbf{A}, \mathbf{X}))

        \mathbf{X}' &= \mathbf{S}^{\top} \mathbf{Z}, \qquad
        \mathbf{A}' = \mathbf{S}^{\top} \mathbf{A} \mathbf{S}

    computed per graph of the batch. :math:`\mathbf{A}\mathbf{S}` is a sparse-dense product and
    no :math:`B \times N_{\max} \times N_{\max}` tensor is ever built. The auxiliary losses are
    computed per graph :math:`g` (padding never counts) and averaged over the :math:`B` graphs:

    .. math::
        \mathcal{L}_{LP} &= \frac{1}{B} \sum_g \frac{1}{N_g}
        \|\mathbf{A}_g - \mathbf{S}_g \mathbf{S}_g^{\top}\|_F, \quad
        \|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F^2 = \|\mathbf{A}_g\|_F^2
        - 2\,\mathrm{tr}(\mathbf{S}_g^\top \mathbf{A}_g \mathbf{S}_g)
        + \|\mathbf{S}_g^\top \mathbf{S}_g\|_F^2

        \mathcal{L}_{E} &= \frac{1}{B} \sum_g \frac{1}{N_g} \sum_{i \in g}
        -\sum_c S_{ic} \log S_{ic}

    with ``link_loss="frobenius"`` (the paper). With ``link_loss="bce"`` (what the authors' code
    trains with), :math:`\mathbf{P}_g = \min(\mathbf{S}_g \mathbf{S}_g^{\top}, 1)` and
    :math:`\epsilon = 10^{-7}`:

    .. math::
        \mathcal{L}_{LP} = \frac{1}{B} \sum_g \frac{1}{N_g^2} \sum_{i, j \in g}
        -A_{ij} \log(P_{ij} + \epsilon) - (1 - A_{ij}) \log(1 - P_{ij} + \epsilon),

    evaluated per group of similar-sized graphs, each padded only to its own largest graph and
    narrowed to its clusters, in row blocks recomputed in the backward pass: time is about
    :math:`O(\sum_g N_g^2 C_g)` rather than the padded batch's :math:`O(B N_{\max}^2 C)`, and
    memory stays at one row block. The authors' code divides the batch
    sum by :math:`\sum_g N_g^2` instead, which weighs large graphs more.

    **Cluster budgets.** With ``ratio=None`` (the default, the paper's rule) every graph is
    pooled into ``num_clusters`` clusters :math:`C`. With a ``ratio``, graph :math:`g` gets
    :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot N_g \rceil)` clusters: its softmax runs
    over the first :math:`C_g` outputs of :math:`\mathrm{GNN}_{\mathrm{pool}}` only, the other
    slots are exactly zero in ``s``, ``x`` and ``adj``, and the output has
    :math:`\min(C, \lceil \mathrm{ratio} \cdot N_{\max} \rceil)` slots instead of :math:`C`.
    This is what makes large graphs cheap: the :math:`C^2` terms then scale with the batch's
    graphs, not with the dataset's largest graph. Where ``pool`` is a
    :class:`~diffpool.nn.GNNEncoder` ending in a linear map (``lin=True``, as
    :meth:`from_encoder` builds it with ``concat=True``), that map computes only the first
    :math:`C_g` logits of each group of similar-sized graphs, not all :math:`C` for every node.

    Args:
        embed (torch.nn.Module): :math:`\mathrm{GNN}_{\mathrm{embed}}`, any PyG message-passing
            module or stack called as ``embed(x, edge_index)`` (``edge_weight`` is passed too
            when given and its ``forward`` takes one), returning ``[N, F']``.
        pool (torch.nn.Module): :math:`\mathrm{GNN}_{\mathrm{pool}}`, called the same way,
            returning ``[N, num_clusters]`` logits.
        num_clusters (int): The number of clusters :math:`C` (the cap with a ``ratio``).
        ratio (float, optional): If set, per-graph budgets
            :math:`\lceil \mathrm{ratio} \cdot N_g \rceil`. (default: :obj:`None`)
        link_loss (str, optional): ``"frobenius"``, ``"bce"`` or ``"none"``.
            (default: :obj:`"frobenius"`)
        link_loss_coef (float, optional): Weight of the link loss in ``aux_loss``.
            (default: :obj:`1.0`)
        entropy_loss (bool, optional): Whether to compute the entropy loss.
            (default: :obj:`True`)
        entropy_loss_coef (float, optional): Weight of the entropy loss in ``aux_loss``.
            (default: :obj:`1.0`)
        validate (bool, optional): Check the inputs and raise a clear error on bad input. The
            checks synchronise with the device; they are skipped under ``torch.compile``.
            (default: :obj:`True`)
    """

    encoder_class = GNNEncoder

    def __init__(
        self,
        embed: torch.nn.Module,
        pool: torch.nn.Module,
        num_clusters: int,
        ratio: float | None = None,
        link_loss: str = "frobenius",
        link_loss_coef: float = 1.0,
        entropy_loss: bool = True,
        entropy_loss_coef: float = 1.0,
        validate: bool = True,
    ):
        super().__init__(
            embed,
            pool,
            num_clusters,
            ratio,
            link_loss,
            link_loss_coef,
            entropy_loss,
            entropy_loss_coef,
            validate,
        )
        self._embed_weighted = _accepts_edge_weight(embed)
        self._pool_weighted = _accepts_edge_weight(pool)

    @staticmethod
    def _run(
        gnn: torch.nn.Module, weighted: bool, x: Tensor, edge_index, edge_weight: Tensor | None
    ) -> Tensor:
        if edge_weight is not None and weighted:
            return gnn(x, edge_index, edge_weight=edge_weight)
        return gnn(x, edge_index)

    def _pool_logits(
        self,
        x: Tensor,
        edge_index,
        edge_weight: Tensor | None,
        num_slots: int,
        groups: SizeBuckets,
        widths: list[int] | None,
    ) -> Tensor:
        """``[N, num_slots]`` pooling logits.

        With per-graph budgets (``widths``) and a pooling GNN that ends in a linear map (a
        :class:`~diffpool.nn.GNNEncoder` with ``lin=True``, as :meth:`from_encoder` builds with
        ``concat=True``), each bucket of graphs gets only the first ``widths[k]`` outputs of
        that map, and the other slots are zero: the softmax masks them out anyway. With
        :math:`C` in the hundreds, as on D&D, the full map is most of the pooling GNN's work.
        """
        head = self.pool.lin if isinstance(self.pool, GNNEncoder) else None
        if widths is None or head is None:
            logits = self._run(self.pool, self._pool_weighted, x, edge_index, edge_weight)
            self._check_logits(logits)
            return logits[:, :num_slots]
        self._check_pool_channels(head.out_features)
        weighted = edge_weight is not None and self._pool_weighted
        kwargs = {"edge_weight": edge_weight} if weighted else {}
        features = self.pool(x, edge_index, project=False, **kwargs)
        rows, inverse = groups.rows()
        parts = []
        for index, w in zip(rows, widths):
            bias = None if head.bias is None else head.bias[:w]
            rows_of_bucket = features.index_select(0, index)
            part = torch.nn.functional.linear(rows_of_bucket, head.weight[:w], bias)
            parts.append(torch.nn.functional.pad(part, (0, num_slots - w)))
        return torch.cat(parts).index_select(0, inverse)

    def forward(
        self,
        x: Tensor,
        edge_index,
        batch: Tensor | None = None,
        edge_weight: Tensor | None = None,
        *,
        batch_size: int | None = None,
        max_num_nodes: int | None = None,
        assignment: Tensor | None = None,
        return_assignment: bool = True,
    ) -> DiffPoolOutput:
        r"""Pool a sparse mini-batch.

        Args:
            x (torch.Tensor): Node features :math:`\mathbf{X} \in \mathbb{R}^{N \times F}`.
            edge_index (torch.Tensor or SparseTensor): ``[2, E]`` edge indices, a
                ``torch_sparse.SparseTensor`` or a ``torch.sparse`` ``[N, N]`` matrix (both in
                PyG's ``adj_t`` convention: entry ``[i, j]`` is the edge :math:`j \to i`).
            batch (torch.Tensor, optional): ``[N]`` sorted graph index of every node;
                :obj:`None` for a single graph. (default: :obj:`None`)
            edge_weight (torch.Tensor, optional): ``[E]`` edge weights for ``edge_index``.
                Duplicate edges add up. (default: :obj:`None`)
            batch_size (int, optional): The number of graphs :math:`B`; pass it (and
                ``max_num_nodes``) for static shapes. (default: :obj:`None`)
            max_num_nodes (int, optional): :math:`N_{\max}`, the padded size of ``s``.
                (default: :obj:`None`)
            assignment (torch.Tensor, optional): ``[N]`` hard cluster id of every node (e.g.
                from a graph clustering, as in DiffPool-Det). :math:`\mathbf{S}` is then its
                one-hot matrix, ``pool`` is not called, the entropy is zero and
                ``cluster_mask`` marks the clusters that hold at least one node.
                (default: :obj:`None`)
            return_assignment (bool, optional): If set to :obj:`False`, the output's ``s`` is
                :obj:`None`: the dense ``[B, N_max, C]`` assignment is then never built (it is
                the largest tensor of a batch with one large graph, and no loss needs it).
                Training loops that do not read ``s`` should pass
                :obj:`False`. (default: :obj:`True`)

        Returns:
            DiffPoolOutput: ``x`` ``[B, C, F']``, ``adj`` ``[B, C, C]``, ``s``
            ``[B, N_max, C]`` (or :obj:`None`), ``mask`` ``[B, N_max]``, ``cluster_mask``
            ``[B, C]`` and the losses.
        """
        validating = self._validating()
        if validating:
            check_features(x, dim=2)
        num_nodes = x.size(0)
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
            batch_size = 1 if batch_size is None else batch_size
        if validating:
            check_batch(batch, num_nodes, batch_size)
            check_connectivity(edge_index, edge_weight, num_nodes)
        if batch_size is None:
            batch_size = int(batch[-1]) + 1
        counts = torch.bincount(batch, minlength=batch_size)
        if max_num_nodes is None:
            max_num_nodes = int(counts.max())
        elif validating:
            check_max_num_nodes(max_num_nodes, counts)

        self._check_pool(assignment)
        num_slots = self._num_slots(max_num_nodes)
        z = self._run(self.embed, self._embed_weighted, x, edge_index, edge_weight)
        widths = None
        # Nodes are sorted by graph, so graph b holds the first counts[b] rows of its block.
        mask = torch.arange(max_num_nodes, device=x.device) < counts.unsqueeze(-1)
        if torch.compiler.is_compiling():
            groups = PaddedBatch(batch, batch_size, max_num_nodes, mask)
        else:
            # Products per group of similar-sized graphs: far less padding than [B, N_max].
            ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

            def width(n: int) -> int:
                return (
                    num_slots
                    if self.ratio is None
                    else min(num_slots, cluster_budget(n, self.ratio))
                )

            def row_cost(n: int) -> int:  # multiply-adds per padded row: S^T [Z | AS], S^T S
                return width(n) * (z.size(-1) + 2 * width(n))

            groups = SizeBuckets(ptr, counts.tolist(), row_cost=row_cost)
            if self.ratio is not None:
                # A bucket's graphs use at most the budget of its largest graph.
                widths = [width(n) for n in groups.heads]
        if assignment is None:
            logits = self._pool_logits(x, edge_index, edge_weight, num_slots, groups, widths)
            cluster_mask = self._cluster_mask(counts, num_slots)
            slot_mask = None if cluster_mask is None else cluster_mask[batch]
            s_flat, entropy = masked_assignment(logits, slot_mask)
        else:
            if validating:
                check_assignment(assignment, (num_nodes,), num_slots)
            dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
            s_flat, entropy = self._fixed_assignment(assignment, num_slots, dtype)
            cluster_mask = torch.zeros(batch_size, num_slots, dtype=torch.bool, device=x.device)
            cluster_mask[batch, assignment.long()] = True

        adj = to_coo_adjacency(edge_index, edge_weight, num_nodes, s_flat.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            adj_times_s = adj.matmul(s_flat)
        s = None
        if return_assignment:
            s = to_dense_batch(s_flat, batch, batch_size=batch_size, max_num_nodes=max_num_nodes)[0]
        s_pool = s_flat if torch.is_autocast_enabled() else s_flat.to(z.dtype)

        def per_graph(values: Tensor) -> Tensor:
            return values.new_zeros(batch_size).index_add(0, batch, values)

        x_pool, adj_pool, s_blocks = groups.pool(s_pool, z, adj_times_s.to(s_pool.dtype), widths)

        def bce_sum() -> Tensor:
            # All pairs per size bucket, each padded only to its largest graph and narrowed to
            # its clusters (never the [B, N_max, N_max] pairs of the padded batch); then the
            # edges, touching only them.
            pairs = groups.reassemble(
                [
                    bce_link_loss_sum(block.to(s_flat.dtype), block_mask)
                    for block, block_mask in zip(s_blocks, groups.masks())
                ]
            )
            return pairs + bce_edge_correction(s_flat, adj.index, adj.value, batch, batch_size)

        return self._output(
            x=x_pool,
            adj=adj_pool,
            s=s if return_assignment else None,
            mask=mask,
            cluster_mask=cluster_mask,
            entropy_sum=per_graph(entropy),
            adj_sq_norm=lambda: adj.squared_norm_per_graph(batch, batch_size),
            trace=lambda: per_graph((s_flat * adj_times_s).sum(-1)),
            gram_sq_norm=lambda: groups.reassemble(
                [gram_squared_norm(block.to(s_flat.dtype)) for block in s_blocks]
            ),
            bce_sum=bce_sum,
            z=z,
            loss_dtype=s_flat.dtype,
        )
