r"""The DiffPool operator as functions: pool embeddings you already have.

:func:`sparse_diff_pool` takes a sparse PyG mini-batch (flat ``[N, F]`` embeddings, connectivity
and ``batch``), :func:`padded_diff_pool` a dense padded one (``[B, N, F]``, ``[B, N, N]`` and a
node mask). Both compute, per graph :math:`g` of the batch,

.. math::
    \mathbf{S}_g = \mathrm{softmax}(\mathbf{L}_g), \qquad
    \mathbf{X}'_g = \mathbf{S}_g^{\top} \mathbf{Z}_g, \qquad
    \mathbf{A}'_g = \mathbf{S}_g^{\top} \mathbf{A}_g \mathbf{S}_g

from the pooling logits :math:`\mathbf{L}`, and the auxiliary losses of
:mod:`diffpool.functional.formulas`, exactly, with padding never counted (or, with
``loss_normalization="pyg"``, normalised over the padded batch as PyG's). Both return a
:class:`~diffpool.functional.DiffPoolOutput`. The modules :class:`~diffpool.DiffPoolConv` and
:class:`~diffpool.DenseDiffPoolConv` own the two GNNs and call these functions.
:func:`dense_diff_pool` is a drop-in for :func:`torch_geometric.nn.dense_diff_pool`: the same
arguments, its ``(x, adj, link_loss, ent_loss)`` and its normalisation.

The assignment is given in one of three forms:

* a float tensor of logits, ``[N, C]`` (sparse) or ``[B, N, C]`` (dense);
* an integer tensor of hard cluster ids, ``[N]`` or ``[B, N]`` (e.g. from a graph clustering, as
  in DiffPool-Det): :math:`\mathbf{S}` is then one-hot, its entropy zero, and a cluster is used
  when it holds a node;
* an :class:`AssignmentHead`, the logits as features and a linear map: with per-graph budgets
  only the rows of the map that a group of graphs uses are computed (on D&D, 1437 clusters
  against about 71 per graph on average, the full map would be most of the pooling GNN's work).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
    masked_assignment,
)
from diffpool.functional._factored import CoarsenedAdjacency, FactoredAdjacency, factored_pays
from diffpool.functional.formulas import (
    LOSS_NORMALIZATIONS,
    batch_link_loss,
    bce_edge_correction,
    bce_link_loss_sum,
    frobenius_link_loss,
    gram_squared_norm,
    loss_divisors,
)
from diffpool.functional.output import DiffPoolOutput
from diffpool.functional._layouts import PaddedBatch, SizeBuckets
from diffpool.utils.connectivity import to_coo_adjacency
from diffpool.utils.validation import (
    as_int64_index,
    check_assignment,
    check_batch,
    check_connectivity,
    check_dense_inputs,
    check_edges_within_graphs,
    check_features,
    check_logits,
    check_max_num_nodes,
    check_num_clusters,
    check_ratio,
)

LINK_LOSSES = ("frobenius", "bce", "none")


class AssignmentHead(NamedTuple):
    r"""Pooling logits as ``features @ weight.T + bias``, computed only for the cluster slots
    that are used.

    With ``fold``, the map's last ``K_L = fold.size(0)`` input columns act through ``fold``:
    the logits are ``features @ [weight[:, :-K_L] | weight[:, -K_L:] @ fold].T + bias``, so
    that a pooling GNN's wide last layer (its output ``v @ fold.T``) is never built and only
    the rows of ``weight`` that are used are multiplied into ``fold``
    (see :meth:`~diffpool.nn.GNNEncoder.fold_head`).

    Attributes:
        features (torch.Tensor): ``[N, H]`` (sparse) or ``[B, N, H]`` (dense) input of the map.
        weight (torch.Tensor): ``[C, H]``, e.g. a :class:`torch.nn.Linear`'s weight (with
            ``fold``: ``[C, H - K + K_L]``).
        bias (torch.Tensor, optional): ``[C]``.
        fold (torch.Tensor, optional): ``[K_L, K]``. (default: :obj:`None`)
    """

    features: Tensor
    weight: Tensor
    bias: Tensor | None = None
    fold: Tensor | None = None

    @property
    def num_clusters(self) -> int:
        return self.weight.size(0)

    def narrow(self, width: int) -> AssignmentHead:
        """The map of the first ``width`` cluster slots, ``fold`` applied."""
        weight = self.weight[:width]
        if self.fold is not None:
            cut = weight.size(1) - self.fold.size(0)
            weight = torch.cat([weight[:, :cut], weight[:, cut:] @ self.fold], dim=1)
        bias = None if self.bias is None else self.bias[:width]
        return AssignmentHead(self.features, weight, bias)

    def logits(self, width: int, rows: Tensor | None = None) -> Tensor:
        """The first ``width`` logits (of the given ``rows`` of ``features``)."""
        head = self.narrow(width) if self.fold is not None else self
        features = self.features if rows is None else self.features.index_select(0, rows)
        bias = None if head.bias is None else head.bias[:width]
        return torch.nn.functional.linear(features, head.weight[:width], bias)


def check_loss_options(link_loss: str, loss_normalization: str = "per_graph") -> None:
    """``link_loss`` in :data:`LINK_LOSSES`, ``loss_normalization`` in
    :data:`~diffpool.functional.formulas.LOSS_NORMALIZATIONS`, and PyG's normalisation only
    for the link losses PyG has (the Frobenius one, or none)."""
    if link_loss not in LINK_LOSSES:
        raise ValueError(f"link_loss must be one of {LINK_LOSSES}, got {link_loss!r}")
    if loss_normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(
            f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, got {loss_normalization!r}"
        )
    if link_loss == "bce" and loss_normalization != "per_graph":
        raise ValueError(
            f"loss_normalization={loss_normalization!r} is the normalisation of PyG's "
            "dense_diff_pool, which has the Frobenius link loss only: use link_loss='frobenius' "
            "(or 'none'), or loss_normalization='per_graph' with link_loss='bce'"
        )


def _check_options(link_loss: str, ratio: float | None, loss_normalization: str) -> None:
    check_loss_options(link_loss, loss_normalization)
    check_ratio(ratio)


def _check_s(s, rows: tuple[int, ...]) -> None:
    """The shape of logits ``[*rows, C]`` or of an :class:`AssignmentHead`'s features
    (hard cluster ids: :func:`~diffpool.utils.validation.check_assignment`); a dense batch of
    one graph may drop the batch dimension."""
    if isinstance(s, AssignmentHead):
        tensor, name, columns = s.features, "s.features", "num_features"
    elif isinstance(s, Tensor):
        if not s.is_floating_point():
            return
        tensor, name, columns = s, "s", "num_clusters"
    else:
        raise TypeError(
            "s must be a tensor of logits or of cluster ids, or an AssignmentHead, got "
            f"{type(s).__name__}"
        )
    if len(rows) == 2 and rows[0] == 1 and tensor.dim() == 2:
        rows = rows[1:]
    check_logits(tensor, rows, name, columns)


def _num_clusters(s, num_clusters: int | None) -> int:
    """``C``: the logits' width, or ``num_clusters`` (which hard cluster ids need)."""
    if isinstance(s, AssignmentHead):
        width = s.num_clusters
    elif s.is_floating_point():
        width = s.size(-1)
    else:
        if num_clusters is None:
            raise ValueError("hard cluster ids need num_clusters (the number of cluster slots)")
        return check_num_clusters(num_clusters)
    if num_clusters is not None and num_clusters != width:
        raise ValueError(
            f"the pooling GNN returns {width} channels per node but num_clusters="
            f"{num_clusters}: its output size must equal the number of clusters"
        )
    return width


def _num_slots(num_clusters: int, ratio: float | None, max_num_nodes: int) -> int:
    """Cluster slots of the output: ``C``, or the largest per-graph budget possible."""
    if ratio is None:
        return num_clusters
    return min(num_clusters, cluster_budget(max_num_nodes, ratio))


def _one_hot(ids: Tensor, num_slots: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    r"""One-hot :math:`\mathbf{S}` from hard cluster ids, and its (zero) entropy."""
    s = torch.nn.functional.one_hot(ids.long(), num_slots).to(dtype)
    return s, s.new_zeros(s.shape[:-1])


#: below this share of its terms, the Frobenius identity of a float32 run is recomputed in
#: float64 (float32 keeps about 7 digits of each term; their difference loses the rest)
CANCELLATION = 1e-3


def _frobenius(terms, dtype: torch.dtype, nodes: Tensor) -> Tensor:
    r"""Per-graph link loss :math:`\frac{1}{N_g}\sqrt{\|A_g\|^2 - 2\,\mathrm{tr}(S_g^\top A_g
    S_g) + \|S_g^\top S_g\|^2}` from ``terms(dtype)``, the three per-graph terms.

    Where :math:`S S^\top` fits :math:`A` closely the terms cancel: a float32 difference of
    terms in the hundreds cannot hold a loss of 1e-7 (it came out exactly 0, with a zero
    gradient). When any graph's result is below :data:`CANCELLATION` of its terms, all three
    are recomputed in float64 (an extra sparse product and Gram matrix, only then; under
    ``torch.compile`` never, to keep the graph static)."""
    adj_sq, trace, gram = terms(dtype)
    if dtype != torch.float64 and not torch.compiler.is_compiling():
        sq = adj_sq.to(dtype) - 2.0 * trace + gram
        if bool((sq <= CANCELLATION * (adj_sq.to(dtype) + gram)).any()):
            adj_sq, trace, gram = terms(torch.float64)
            return frobenius_link_loss(adj_sq, trace, gram, nodes.double()).to(dtype)
    return frobenius_link_loss(adj_sq, trace, gram, nodes)


def _float_dtype(z: Tensor) -> torch.dtype:
    return z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32


def _output(
    x: Tensor,
    adj: Tensor,
    s: Tensor | None,
    mask: Tensor,
    cluster_mask: Tensor | None,
    link_per_graph: Tensor,
    entropy_per_graph: Tensor,
    z: Tensor,
    link_loss_coef: float,
    entropy_loss_coef: float,
    loss_normalization: str,
) -> DiffPoolOutput:
    if cluster_mask is None:
        cluster_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    link = batch_link_loss(link_per_graph, loss_normalization)
    entropy = entropy_per_graph.mean()
    return DiffPoolOutput(
        x=x,
        adj=adj,
        s=s,
        mask=mask,
        cluster_mask=cluster_mask,
        link_loss=link,
        entropy_loss=entropy,
        aux_loss=link_loss_coef * link + entropy_loss_coef * entropy,
        link_loss_per_graph=link_per_graph,
        entropy_loss_per_graph=entropy_per_graph,
        z=z,
    )


def sparse_diff_pool(
    x: Tensor,
    edge_index,
    s: Tensor | AssignmentHead,
    batch: Tensor | None = None,
    *,
    edge_weight: Tensor | None = None,
    num_clusters: int | None = None,
    ratio: float | None = None,
    link_loss: str = "frobenius",
    entropy_loss: bool = True,
    link_loss_coef: float = 1.0,
    entropy_loss_coef: float = 1.0,
    loss_normalization: str = "per_graph",
    batch_size: int | None = None,
    max_num_nodes: int | None = None,
    return_assignment: bool = True,
    validate: bool = True,
    factored_adj: bool = False,
) -> DiffPoolOutput:
    r"""Pool the embeddings of a sparse mini-batch into a coarsened dense batch.

    :math:`\mathbf{A}\mathbf{S}` is a sparse-dense product, and the per-graph products
    :math:`\mathbf{S}_g^\top[\mathbf{Z}_g \,|\, (\mathbf{A}\mathbf{S})_g]` run per group of
    similar-sized graphs (:class:`~diffpool.functional._layouts.SizeBuckets`), each padded only
    to its own largest graph. Where the products :math:`\mathbf{A}_g\mathbf{S}_g` of all
    groups come to at most :data:`~diffpool.functional._layouts.DENSE_BLOCK_MACS`
    multiply-adds (batches of small graphs), each group's adjacency goes into a dense
    ``[b, n, n]`` block instead, which is cheaper there than the sparse product: a batch of
    graphs of similar size is then one :math:`B \times N_{\max} \times N_{\max}` block (so is
    a bucket that ``factored_adj`` keeps as factors). Under ``torch.compile`` the batch is
    padded once instead (static shapes).

    With a ``ratio``, graph :math:`g` gets :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot
    N_g \rceil)` clusters: its softmax runs over its first :math:`C_g` slots, the others are
    exactly zero in ``s``, ``x`` and ``adj``, and the output has
    :math:`\min(C, \lceil \mathrm{ratio} \cdot N_{\max} \rceil)` slots.

    Losses per graph, averaged over the graphs (see :mod:`diffpool.functional.formulas`):
    ``link_loss="frobenius"`` :math:`\frac{1}{N_g}\|\mathbf{A}_g - \mathbf{S}_g
    \mathbf{S}_g^\top\|_F` (exact, from three per-graph terms), ``"bce"`` the authors' binary
    cross-entropy over all :math:`N_g^2` pairs divided by :math:`N_g^2` (evaluated per size
    bucket in row blocks recomputed in the backward pass), ``"none"``; the entropy
    :math:`\frac{1}{N_g}\sum_i H(\mathbf{S}_{g,i})`. With ``loss_normalization="pyg"`` both
    are normalised as :func:`torch_geometric.nn.dense_diff_pool` normalises them on the
    padded batch ``[B, N_max]`` (:mod:`diffpool.functional.formulas`).

    Args:
        x (torch.Tensor): Node embeddings :math:`\mathbf{Z}`, ``[N, F]``.
        edge_index (torch.Tensor or SparseTensor): ``[2, E]`` edge indices, a
            ``torch_sparse.SparseTensor`` or a ``torch.sparse`` ``[N, N]`` matrix (both in PyG's
            ``adj_t`` convention). Every edge must join two nodes of the same graph. Integer
            indices other than int64 (PyG's int32) are taken as int64, as is ``batch``.
        s (torch.Tensor or AssignmentHead): ``[N, C]`` pooling logits, ``[N]`` hard cluster
            ids, or an :class:`AssignmentHead`.
        batch (torch.Tensor, optional): ``[N]`` sorted graph index of every node; :obj:`None`
            for one graph. (default: :obj:`None`)
        edge_weight (torch.Tensor, optional): ``[E]`` edge weights. (default: :obj:`None`)
        num_clusters (int, optional): :math:`C`; required with hard cluster ids, else the
            logits' width. (default: :obj:`None`)
        ratio (float, optional): Per-graph budgets. (default: :obj:`None`)
        link_loss (str, optional): ``"frobenius"``, ``"bce"`` or ``"none"``.
            (default: :obj:`"frobenius"`)
        entropy_loss (bool, optional): Compute the entropy loss. (default: :obj:`True`)
        link_loss_coef (float, optional): Weight of the link loss in ``aux_loss``.
            (default: :obj:`1.0`)
        entropy_loss_coef (float, optional): Weight of the entropy loss in ``aux_loss``.
            (default: :obj:`1.0`)
        loss_normalization (str, optional): ``"per_graph"``: each graph's losses divided by
            its own nodes, then the mean over graphs (padding never counts); ``"pyg"``:
            :func:`torch_geometric.nn.dense_diff_pool`'s losses on the batch padded to
            ``max_num_nodes`` (a PyG model's coefficients carry over); ``"pyg_unnormalized"``:
            the same with its ``normalize=False``. The PyG forms have no BCE link loss.
            (default: :obj:`"per_graph"`)
        batch_size (int, optional): :math:`B`, for static shapes. (default: :obj:`None`)
        max_num_nodes (int, optional): :math:`N_{\max}`, the padded size of ``s`` (and the
            :math:`N` of PyG's normalisation). (default: :obj:`None`: the largest graph)
        return_assignment (bool, optional): Build the dense ``[B, N_max, C]`` assignment
            (``output.s``); no loss needs it. (default: :obj:`True`)
        validate (bool, optional): Check the inputs (synchronises with the device; skipped
            under ``torch.compile``). (default: :obj:`True`)
        factored_adj (bool, optional): With fixed budgets, keep :math:`\mathbf{A}'_g` as its
            factors :math:`(\mathbf{S}_g, \mathbf{A}_g)` for the size buckets whose graphs
            are small against :math:`C` (:func:`~diffpool.functional._factored.factored_pays`):
            ``adj`` is then a :class:`~diffpool.functional._factored.CoarsenedAdjacency`, which
            the dense layers after the pooling run on group by group (what
            :class:`~diffpool.DiffPoolNet` does in its training steps). (default: :obj:`False`)

    Returns:
        DiffPoolOutput: ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]`` (or a
        :class:`~diffpool.functional._factored.CoarsenedAdjacency`), ``s`` ``[B, N_max, C]``
        (or :obj:`None`), ``mask`` ``[B, N_max]``, ``cluster_mask`` ``[B, C]`` and the losses;
        ``z`` is the input ``x``.
    """
    _check_options(link_loss, ratio, loss_normalization)
    validating = validate and not torch.compiler.is_compiling()
    num_nodes = x.size(0)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
        batch_size = 1 if batch_size is None else batch_size
    if validating:
        # the embeddings' values are the caller's (a diverging model's NaN is its loss's to
        # report), their shape is ours
        check_features(x, dim=2, finite=False)
        check_batch(batch, num_nodes, batch_size)
        check_connectivity(edge_index, edge_weight, num_nodes)
        _check_s(s, (num_nodes,))
    # int32 indices (valid in PyG) as int64, which torch's scatter needs on some paths
    edge_index, batch = as_int64_index(edge_index), as_int64_index(batch)
    if batch_size is None:
        batch_size = int(batch[-1]) + 1
    counts = torch.bincount(batch, minlength=batch_size)
    if max_num_nodes is None:
        max_num_nodes = int(counts.max())
    elif validating:
        check_max_num_nodes(max_num_nodes, counts)
    num_clusters = _num_clusters(s, num_clusters)
    num_slots = _num_slots(num_clusters, ratio, max_num_nodes)
    mask = torch.arange(max_num_nodes, device=x.device) < counts.unsqueeze(-1)

    # Products per group of similar-sized graphs: far less padding than [B, N_max].
    widths = None
    if torch.compiler.is_compiling():
        groups = PaddedBatch(batch, batch_size, max_num_nodes, mask)
    else:

        def width(n: int) -> int:
            return num_slots if ratio is None else min(num_slots, cluster_budget(n, ratio))

        def row_cost(n: int) -> int:  # multiply-adds per padded row: S^T [Z | AS], S^T S
            return width(n) * (x.size(-1) + 2 * width(n))

        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        groups = SizeBuckets(ptr, counts.tolist(), row_cost=row_cost)
        if ratio is not None:
            # a bucket's graphs use at most the budget of its largest graph
            widths = [width(n) for n in groups.heads]

    cluster_mask = None
    # The assignment in parts of the nodes: one part ``[N, num_slots]`` in node order, or with
    # per-graph budgets one part per size bucket ``[n_k, widths[k]]`` in the order of
    # ``groups.rows()`` (the batch's largest budget then never widens the other buckets).
    rows = inverse = None
    part_batch = [batch]  # the graph of every row of the parts
    if isinstance(s, AssignmentHead) or s.is_floating_point():
        if ratio is not None:
            budgets = cluster_budgets(counts, ratio, num_clusters)
            cluster_mask = cluster_mask_from_budgets(budgets, num_slots)
        if widths is not None and groups.per_bucket_pays(widths, num_slots, _num_edges(edge_index)):
            rows, inverse = groups.rows()
            part_batch = [batch.index_select(0, r) for r in rows]
            s_parts, entropy = _bucket_assignments(s, rows, widths, part_batch, budgets)
        else:
            logits = _sparse_logits(s, num_slots)
            slot_mask = None if cluster_mask is None else cluster_mask[batch]
            s_flat, entropy = masked_assignment(logits, slot_mask)
            s_parts, entropy = [s_flat], [entropy]
    else:
        if validating:
            check_assignment(s, (num_nodes,), num_slots)
        s_flat, entropy = _one_hot(s, num_slots, _float_dtype(x))
        cluster_mask = torch.zeros(batch_size, num_slots, dtype=torch.bool, device=x.device)
        cluster_mask[batch, s.long()] = True
        s_parts, entropy = [s_flat], [entropy]
    dtype = s_parts[0].dtype

    factored = None  # per bucket: keep its A' as factors
    if rows is None and factored_adj and cluster_mask is None and isinstance(groups, SizeBuckets):
        factored = [
            factored_pays(n, num_slots, len(graphs))
            for n, graphs in zip(groups.heads, groups.buckets)
        ]
        factored = factored if any(factored) else None
    # Small graphs: the adjacency as dense blocks per size bucket, no coalesce and no sparse
    # product (the BCE loss reads the edges instead).
    dense_blocks = (
        rows is None
        and factored is None
        and link_loss != "bce"
        and isinstance(groups, SizeBuckets)
        and groups.dense_blocks_pay(widths or [num_slots] * groups.num_blocks)
    )
    adj = to_coo_adjacency(edge_index, edge_weight, num_nodes, dtype, coalesced=not dense_blocks)
    if validating:
        check_edges_within_graphs(adj.index, batch)
    cast = (lambda t: t) if torch.is_autocast_enabled() else (lambda t: t.to(x.dtype))
    factored_parts = {}  # bucket -> its FactoredAdjacency
    if dense_blocks:
        adj_blocks = groups.dense_adjacency(adj, batch, list(range(groups.num_blocks)))
        x_pool, adj_pool, s_blocks, adj_s_blocks = groups.pool_dense(
            cast(s_parts[0]), x, adj_blocks, widths
        )
    else:
        adj_parts = [adj] if rows is None else groups.split_adjacency(adj)
        with torch.autocast(device_type=x.device.type, enabled=False):
            adj_s_parts = [a.matmul(p) for a, p in zip(adj_parts, s_parts)]
        if rows is None:
            x_pool, adj_pool, s_blocks = groups.pool(
                cast(s_parts[0]), x, cast(adj_s_parts[0]), widths, factored
            )
        else:
            x_pool, adj_pool, s_blocks = groups.pool_buckets(
                [cast(p) for p in s_parts], x, [cast(p) for p in adj_s_parts], num_slots
            )
    if factored is not None:
        which = [k for k, f in enumerate(factored) if f]
        dense = dict(zip(which, groups.dense_adjacency(adj, batch, which)))
        factored_parts = {
            k: FactoredAdjacency(s_blocks[k], block.to(s_blocks[k].dtype))
            for k, block in dense.items()
        }
        parts = [factored_parts.get(k, block) for k, block in enumerate(adj_pool)]
        adj_pool = CoarsenedAdjacency(groups.buckets, parts, num_slots)

    def per_graph(values: list[Tensor]) -> Tensor:
        out = values[0].new_zeros(batch_size)
        for graph, v in zip(part_batch, values):
            out = out.index_add(0, graph, v)
        return out

    # Losses in float32 or wider, also under autocast: the Frobenius identity subtracts large
    # terms and would lose all precision in bf16.
    with torch.autocast(device_type=x.device.type, enabled=False):
        nodes = counts.clamp(min=1).to(dtype)
        link_div, entropy_div = loss_divisors(loss_normalization, nodes, max_num_nodes)
        entropy_per_graph = (
            per_graph(entropy) / entropy_div if entropy_loss else torch.zeros_like(nodes)
        )
        if link_loss == "frobenius":

            def terms(d: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
                adj_sq, trace = dense_terms(d) if dense_blocks else sparse_terms(d)
                gram = [gram_norm(k, b, d) for k, b in enumerate(s_blocks)]
                return adj_sq, trace, groups.reassemble(gram)

            def sparse_terms(d: torch.dtype) -> tuple[Tensor, Tensor]:
                traces = []
                for a, p, a_p in zip(adj_parts, s_parts, adj_s_parts):
                    if d != dtype:
                        p = p.to(d)
                        a_p = a._replace(value=a.value.to(d)).matmul(p)
                    traces.append((p * a_p).sum(-1))
                adj_d = adj._replace(value=adj.value.to(d))
                return adj_d.squared_norm_per_graph(batch, batch_size), per_graph(traces)

            def dense_terms(d: torch.dtype) -> tuple[Tensor, Tensor]:
                # from the blocks: duplicate edges are summed there, not in adj
                squares, traces = [], []
                for a, s_block, a_s in zip(adj_blocks, s_blocks, adj_s_blocks):
                    a, s_block = a.to(d), s_block.to(d)
                    if a_s.dtype != d:
                        a_s = torch.bmm(a, s_block)
                    squares.append(a.pow(2).sum((-2, -1)))
                    traces.append((s_block * a_s).sum((-2, -1)))
                return groups.reassemble(squares), groups.reassemble(traces)

            def gram_norm(k: int, block: Tensor, d: torch.dtype) -> Tensor:
                part = factored_parts.get(k)
                if part is not None and part.dtype == d:  # its Gram matrix serves both
                    return part.gram.pow(2).sum((-2, -1))
                return gram_squared_norm(block.to(d))

            link_per_graph = _frobenius(terms, dtype, link_div)
        elif link_loss == "bce":
            # all pairs per size bucket, each padded only to its largest graph and narrowed to
            # its clusters; then the edges, touching only them
            pairs = groups.reassemble(
                [
                    bce_link_loss_sum(block.to(dtype), block_mask)
                    for block, block_mask in zip(s_blocks, groups.masks())
                ]
            )
            edges = sum(
                bce_edge_correction(p, a.index, a.value, graph, batch_size)
                for p, a, graph in zip(s_parts, adj_parts, part_batch)
            )
            link_per_graph = (pairs + edges) / nodes.pow(2)
        else:
            link_per_graph = nodes.new_zeros(batch_size)
    dense_s = None
    if return_assignment:
        s_flat = s_parts[0]
        if rows is not None:  # back to node order, unused slots zero
            s_flat = torch.cat(
                [torch.nn.functional.pad(p, (0, num_slots - p.size(-1))) for p in s_parts]
            ).index_select(0, inverse)
        dense_s = to_dense_batch(s_flat, batch, batch_size=batch_size, max_num_nodes=max_num_nodes)[
            0
        ]
    return _output(
        x_pool,
        adj_pool,
        dense_s,
        mask,
        cluster_mask,
        link_per_graph,
        entropy_per_graph,
        x,
        link_loss_coef,
        entropy_loss_coef,
        loss_normalization,
    )


def _num_edges(edge_index) -> int:
    if isinstance(edge_index, Tensor) and edge_index.layout == torch.strided:
        return edge_index.size(1)
    return edge_index.nnz() if hasattr(edge_index, "nnz") else edge_index._nnz()


def _bucket_assignments(
    s, rows: list[Tensor], widths: list[int], graphs: list[Tensor], budgets: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Per size bucket ``k``: the assignment of its nodes ``rows[k]`` (of the graphs
    ``graphs[k]``) over its first ``widths[k]`` slots, ``[n_k, widths[k]]``, each node's
    softmax over its graph's ``budgets``, and their entropies."""
    if isinstance(s, AssignmentHead):
        s = s.narrow(max(widths))  # the head's fold, once for all buckets
    parts, entropies = [], []
    for index, w, graph in zip(rows, widths, graphs):
        if isinstance(s, AssignmentHead):
            logits = s.logits(w, index)
        else:
            logits = s.index_select(0, index)[:, :w]
        slots = torch.arange(w, device=logits.device) < budgets.index_select(0, graph)[:, None]
        part, entropy = masked_assignment(logits, slots)
        parts.append(part)
        entropies.append(entropy)
    return parts, entropies


def _sparse_logits(s, num_slots: int) -> Tensor:
    """``[N, num_slots]`` logits, of a tensor or an :class:`AssignmentHead`."""
    return s.logits(num_slots) if isinstance(s, AssignmentHead) else s[:, :num_slots]


def padded_diff_pool(
    x: Tensor,
    adj: Tensor,
    s: Tensor | AssignmentHead,
    mask: Tensor | None = None,
    *,
    num_clusters: int | None = None,
    ratio: float | None = None,
    link_loss: str = "frobenius",
    entropy_loss: bool = True,
    link_loss_coef: float = 1.0,
    entropy_loss_coef: float = 1.0,
    loss_normalization: str = "per_graph",
    return_assignment: bool = True,
    validate: bool = True,
) -> DiffPoolOutput:
    r"""Pool a dense, padded batch: the counterpart of :func:`sparse_diff_pool` for the levels
    after the first pooling (or batches that are dense already), with the same budgets and
    losses, :math:`N_g = \sum_i M_{gi}` real nodes per graph. Entries of ``adj`` outside the
    mask are ignored. The positional arguments are those of
    :func:`torch_geometric.nn.dense_diff_pool`; :func:`dense_diff_pool` returns what that
    returns.

    Args:
        x (torch.Tensor): Node embeddings :math:`\mathbf{Z}`, ``[B, N, F]`` (or ``[N, F]``).
        adj (torch.Tensor or FactoredAdjacency): Adjacency ``[B, N, N]`` (or ``[N, N]``), or
            the previous level's :class:`~diffpool.functional._factored.FactoredAdjacency`
            (pooled through its factors, never built).
        s (torch.Tensor or AssignmentHead): ``[B, N, C]`` logits, ``[B, N]`` hard cluster ids
            (entries of padded nodes are ignored), or an :class:`AssignmentHead`.
        mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes.
            (default: :obj:`None`)
        **options: ``num_clusters``, ``ratio``, ``link_loss``, ``entropy_loss``,
            ``link_loss_coef``, ``entropy_loss_coef``, ``loss_normalization``,
            ``return_assignment`` and ``validate``, as for :func:`sparse_diff_pool`; PyG's
            normalisation pads to ``N = x.size(-2)``.

    Returns:
        DiffPoolOutput: ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]``, ``s`` ``[B, N, C]`` (or
        :obj:`None`), ``mask`` ``[B, N]``, ``cluster_mask`` ``[B, C]`` and the losses.
    """
    _check_options(link_loss, ratio, loss_normalization)
    validating = validate and not torch.compiler.is_compiling()
    x = x.unsqueeze(0) if x.dim() == 2 else x
    adj = adj.unsqueeze(0) if adj.dim() == 2 else adj
    if mask is not None and mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if validating:
        # the embeddings' values are the caller's, the adjacency's are input (as for the layer)
        check_dense_inputs(
            x,
            adj,
            mask,
            finite=False,
            finite_adj=True,
            factored=isinstance(adj, FactoredAdjacency),
        )
        _check_s(s, tuple(x.shape[:2]))
    batch_size, max_nodes = x.shape[:2]
    # without a mask every node is real: the masking below is skipped (fixed budgets' deeper
    # levels, where it would copy [B, C, C] tensors to change nothing)
    masked = mask is not None
    factored = isinstance(adj, FactoredAdjacency)
    if factored and masked:
        adj, factored = adj.to_dense(), False
    if mask is None:
        mask = torch.ones(batch_size, max_nodes, dtype=torch.bool, device=x.device)
    num_clusters = _num_clusters(s, num_clusters)
    num_slots = _num_slots(num_clusters, ratio, max_nodes)
    node_mask = mask.unsqueeze(-1)

    if isinstance(s, AssignmentHead) or s.is_floating_point():
        if isinstance(s, AssignmentHead):
            features = s.features.unsqueeze(0) if s.features.dim() == 2 else s.features
            logits = s._replace(features=features).logits(num_slots)
        else:
            logits = (s.unsqueeze(0) if s.dim() == 2 else s)[..., :num_slots]
        if masked:
            logits = logits * node_mask.to(logits.dtype)
        cluster_mask = None
        if ratio is not None:
            cluster_mask = cluster_mask_from_budgets(
                cluster_budgets(mask.sum(-1), ratio, num_clusters), num_slots
            )
        slot_mask = None if cluster_mask is None else cluster_mask.unsqueeze(1)
        s, entropy = masked_assignment(logits, slot_mask)
        if masked:
            s = s * node_mask.to(s.dtype)
    else:
        s = s.unsqueeze(0) if s.dim() == 1 else s
        if validating:
            check_assignment(s, tuple(mask.shape), num_slots, mask)
        s, entropy = _one_hot(torch.where(mask, s, 0), num_slots, _float_dtype(x))
        s = s * node_mask.to(s.dtype)
        cluster_mask = s.sum(1) > 0

    with torch.autocast(device_type=x.device.type, enabled=False):
        if masked:
            adj = torch.where(node_mask & mask.unsqueeze(-2), adj.to(s.dtype), 0.0)
        else:
            adj = adj.to(s.dtype)
        # a factored A' = S_prev^T A S_prev is pooled through its factors, never built
        adj_times_s = None if factored else torch.bmm(adj, s)
        adj_pool_full = adj.congruence(s) if factored else None
    s_t = s.transpose(1, 2)
    s_pool = s_t if torch.is_autocast_enabled() else s_t.to(x.dtype)
    x_pool = torch.bmm(s_pool, x)
    if factored:
        adj_pool = adj_pool_full.to(s_pool.dtype)
    else:
        adj_pool = torch.bmm(s_pool, adj_times_s.to(s_pool.dtype))

    with torch.autocast(device_type=x.device.type, enabled=False):
        nodes = mask.sum(-1).clamp(min=1).to(s.dtype)
        link_div, entropy_div = loss_divisors(loss_normalization, nodes, max_nodes)
        if masked:
            entropy = torch.where(mask, entropy, 0.0)
        entropy_per_graph = entropy.sum(-1) / entropy_div
        if not entropy_loss:
            entropy_per_graph = torch.zeros_like(entropy_per_graph)
        if link_loss == "frobenius":

            def terms(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
                adj_d, s_d = adj.to(dtype), s.to(dtype)
                if factored:
                    pooled = adj_pool_full if dtype == s.dtype else adj_d.congruence(s_d)
                    return (
                        adj_d.squared_norm(),
                        pooled.diagonal(dim1=-2, dim2=-1).sum(-1),
                        gram_squared_norm(s_d),
                    )
                adj_s = adj_times_s if dtype == s.dtype else torch.bmm(adj_d, s_d)
                return (
                    adj_d.pow(2).sum((-2, -1)),
                    (s_d * adj_s).sum((-2, -1)),
                    gram_squared_norm(s_d),
                )

            link_per_graph = _frobenius(terms, s.dtype, link_div)
        elif link_loss == "bce":
            dense = adj.to_dense() if factored else adj
            link_per_graph = bce_link_loss_sum(s, mask, dense) / nodes.pow(2)
        else:
            link_per_graph = torch.zeros_like(nodes)
    return _output(
        x_pool,
        adj_pool,
        s if return_assignment else None,
        mask,
        cluster_mask,
        link_per_graph,
        entropy_per_graph,
        x,
        link_loss_coef,
        entropy_loss_coef,
        loss_normalization,
    )


def dense_diff_pool(
    x: Tensor,
    adj: Tensor,
    s: Tensor,
    mask: Tensor | None = None,
    normalize: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""A drop-in for :func:`torch_geometric.nn.dense_diff_pool`: the same arguments, and
    ``(x, adj, link_loss, ent_loss)`` with PyG's normalisation, over the padded batch:

    .. math::
        \mathcal{L}_{LP} = \frac{\|\mathbf{A} - \mathbf{S}\mathbf{S}^\top\|_F}{B N^2}
        \ (\texttt{normalize=False}: \text{not divided}), \qquad
        \mathcal{L}_E = \frac{1}{B N} \sum_{g, i} H(\mathbf{S}_{g,i})

    (padded rows have zero entropy but count in :math:`B N`). It is
    :func:`padded_diff_pool` with ``loss_normalization="pyg"`` (or ``"pyg_unnormalized"``),
    whose :class:`~diffpool.functional.DiffPoolOutput` has the per-graph losses, the assignment
    and the budgets too, and whose default is the per-graph, padding-free normalisation.

    Where PyG's and this one differ: the link loss is computed from three per-graph terms
    (no :math:`B \times N \times N` residual), entries of ``adj`` outside the ``mask`` are
    ignored (PyG adds them to its link loss; :func:`~torch_geometric.utils.to_dense_adj`'s
    padding is zero), the entropy is exact (PyG's adds :math:`10^{-15}` inside the log) and the
    inputs are checked.

    Args:
        x (torch.Tensor): Node features ``[B, N, F]`` (or ``[N, F]``).
        adj (torch.Tensor): Adjacency ``[B, N, N]`` (or ``[N, N]``).
        s (torch.Tensor): Assignment logits ``[B, N, C]`` (or ``[N, C]``); the softmax is
            taken here.
        mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes.
            (default: :obj:`None`)
        normalize (bool, optional): Divide the link loss by ``adj.numel()``.
            (default: :obj:`True`)

    Returns:
        (torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor): pooled ``x`` ``[B, C, F]``,
        coarsened ``adj`` ``[B, C, C]``, the link loss and the entropy loss.
    """
    out = padded_diff_pool(
        x,
        adj,
        s,
        mask,
        loss_normalization="pyg" if normalize else "pyg_unnormalized",
        return_assignment=False,
    )
    return out.x, out.adj, out.link_loss, out.entropy_loss
