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

from diffpool.functional._factored import CoarsenedAdjacency, FactoredAdjacency
from diffpool.functional._layouts import (
    BlockProducts,
    PaddedBatch,
    SizeBuckets,
    bucket_products,
    dense_products,
    pad_slots,
    sparse_products,
)
from diffpool.functional._plan import BatchShape, Plan, plan_sparse, residual_pays
from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
)
from diffpool.functional.formulas import (
    LOSS_NORMALIZATIONS,
    batch_link_loss,
    bce_edge_correction,
    bce_link_loss_sum,
    coarsen,
    frobenius_per_graph,
    gram_squared_norm,
    link_terms,
    loss_divisors,
    masked_assignment,
    one_hot_assignment,
    residual_link_loss,
)
from diffpool.functional.output import DiffPoolOutput
from diffpool.utils.connectivity import to_coo_adjacency
from diffpool.utils.validation import (
    DeferredChecks,
    as_int64_index,
    check_assignment,
    check_batch,
    check_connectivity,
    check_count,
    check_dense_inputs,
    check_edges_within_graphs,
    check_features,
    check_graph_sizes,
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


class PoolOptions(NamedTuple):
    """The options of a pooling level that both functions share (see
    :func:`sparse_diff_pool`)."""

    num_clusters: int | None = None
    ratio: float | None = None
    link_loss: str = "frobenius"
    entropy_loss: bool = True
    link_loss_coef: float = 1.0
    entropy_loss_coef: float = 1.0
    loss_normalization: str = "per_graph"


def _float_dtype(z: Tensor) -> torch.dtype:
    return z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32


def _is_soft(s) -> bool:
    """Logits or an assignment head, not hard cluster ids."""
    return isinstance(s, AssignmentHead) or s.is_floating_point()


def _output(
    options: PoolOptions,
    pooled: tuple[Tensor, Tensor],
    s: Tensor | None,
    masks: tuple[Tensor, Tensor | None],
    losses: tuple[Tensor, Tensor],
    z: Tensor,
) -> DiffPoolOutput:
    (x, adj), (mask, cluster_mask), (link_per_graph, entropy_per_graph) = pooled, masks, losses
    if cluster_mask is None:
        cluster_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    link = batch_link_loss(link_per_graph, options.loss_normalization)
    entropy = entropy_per_graph.mean()
    return DiffPoolOutput(
        x=x,
        adj=adj,
        s=s,
        mask=mask,
        cluster_mask=cluster_mask,
        link_loss=link,
        entropy_loss=entropy,
        aux_loss=options.link_loss_coef * link + options.entropy_loss_coef * entropy,
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
    layout: str | Plan = "auto",
) -> DiffPoolOutput:
    r"""Pool the embeddings of a sparse mini-batch into a coarsened dense batch.

    The per-graph products :math:`\mathbf{S}_g^\top[\mathbf{Z}_g \,|\, \mathbf{A}_g
    \mathbf{S}_g]` run in one of the ``layout`` s of :mod:`diffpool.functional._plan`: per
    group of similar-sized graphs, each padded only to its own largest graph, with
    :math:`\mathbf{A}\mathbf{S}` a sparse-dense product (no :math:`n \times n` block; the
    assignment held per group where per-graph budgets differ enough), or the batch padded once
    with one dense ``[B, N_max, N_max]`` adjacency block (batches of small graphs, where that
    is cheaper, and under ``torch.compile``: static shapes). Every layout gives the same
    result up to float rounding.

    With a ``ratio``, graph :math:`g` gets :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot
    N_g \rceil)` clusters: its softmax runs over its first :math:`C_g` slots, the others are
    exactly zero in ``s``, ``x`` and ``adj``, and the output has
    :math:`\min(C, \lceil \mathrm{ratio} \cdot N_{\max} \rceil)` slots.

    Losses per graph, averaged over the graphs (see :mod:`diffpool.functional.formulas`):
    ``link_loss="frobenius"`` :math:`\frac{1}{N_g}\|\mathbf{A}_g - \mathbf{S}_g
    \mathbf{S}_g^\top\|_F` (exact, from three per-graph terms; small dense blocks from the
    residual), ``"bce"`` the authors' binary
    cross-entropy over all :math:`N_g^2` pairs divided by :math:`N_g^2` (evaluated in row
    blocks recomputed in the backward pass), ``"none"``; the entropy
    :math:`\frac{1}{N_g}\sum_i H(\mathbf{S}_{g,i})`. With ``loss_normalization="pyg"`` both
    are normalised as :func:`torch_geometric.nn.dense_diff_pool` normalises them on the
    padded batch ``[B, N_max]``.

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
        layout (str or Plan, optional): ``"auto"`` (the planner chooses from the batch's
            sizes), ``"padded"``, ``"sparse"`` or ``"per_bucket"`` (see
            :mod:`diffpool.functional._plan`), or a ``Plan`` with its size buckets.
            (default: :obj:`"auto"`)

    Returns:
        DiffPoolOutput: ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]``, ``s`` ``[B, N_max, C]``
        (or :obj:`None`), ``mask`` ``[B, N_max]``, ``cluster_mask`` ``[B, C]`` and the losses;
        ``z`` is the input ``x``.
    """
    options = PoolOptions(
        num_clusters,
        ratio,
        link_loss,
        entropy_loss,
        link_loss_coef,
        entropy_loss_coef,
        loss_normalization,
    )
    run = SparseCall(batch_size, max_num_nodes, return_assignment, validate, layout)
    return pool_sparse(x, edge_index, s, batch, edge_weight, options, run)


class SparseCall(NamedTuple):
    """How :func:`pool_sparse` runs (see :func:`sparse_diff_pool`). ``counts``: the nodes of
    every graph ``[B]`` and the same on the host (:obj:`None` under ``torch.compile``), where
    the caller read them already with :func:`read_sparse_batch` (whose value checks then
    stand for this call's). ``factored``
    lets the buckets of graphs small against :math:`C` keep their coarsened adjacency as its
    factors (a :class:`~diffpool.functional._factored.CoarsenedAdjacency`, for
    :class:`~diffpool.models.DiffPoolNet`'s own dense levels only)."""

    batch_size: int | None = None
    max_num_nodes: int | None = None
    return_assignment: bool = True
    validate: bool = True
    layout: str | Plan = "auto"
    factored: bool = False
    counts: tuple[Tensor, list[int] | None] | None = None


class _Batch(NamedTuple):
    """The facts of a sparse batch."""

    batch: Tensor  # [N] int64
    size: int  # B
    counts: Tensor  # [B] nodes per graph
    host_counts: list[int] | None  # the same on the host (None under torch.compile)
    max_num_nodes: int
    mask: Tensor  # [B, N_max]


def read_sparse_batch(
    x: Tensor,
    edge_index,
    edge_weight: Tensor | None,
    batch: Tensor | None,
    batch_size: int | None,
    validate: bool,
    finite_x: bool = False,
) -> tuple[Tensor, Tensor, list[int] | None]:
    """The batch vector (int64), its node counts ``[B]`` and the same on the host, read from
    the device together with every value check of the inputs (``validate``; ``finite_x``: the
    values of ``x`` too) in one transfer. Shapes and types are checked before anything is read.
    Under ``torch.compile`` nothing is read (``None`` on the host)."""
    num_nodes = x.size(0)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
        batch_size = 1 if batch_size is None else batch_size
    checks = DeferredChecks() if validate else None
    if validate:
        if batch_size is not None:
            check_count(batch_size, "batch_size")
        check_features(x, dim=2, finite=finite_x, checks=checks)
        check_batch(batch, num_nodes, batch_size, checks)
        check_connectivity(edge_index, edge_weight, num_nodes, checks)
    batch = as_int64_index(batch)
    if batch_size is None:  # one synchronisation more: pass batch_size to save it
        batch_size = max(1, int(batch[-1]) + 1)
    # never an index error on a batch that the checks refuse by name
    counts = batch.new_zeros(batch_size).index_add_(
        0, batch.clamp(0, batch_size - 1), torch.ones_like(batch)
    )
    if validate:
        check_edges_within_graphs(_edge_indices(edge_index, num_nodes), batch, checks)
    if torch.compiler.is_compiling():
        return batch, counts, None
    host = (checks or DeferredChecks()).read(counts)[0]
    if validate:
        check_graph_sizes(host)
    return batch, counts, host


def _edge_indices(edge_index, num_nodes: int) -> Tensor:
    """``[2, E]`` source and target of every edge, of any accepted connectivity."""
    if isinstance(edge_index, Tensor) and edge_index.layout == torch.strided:
        return as_int64_index(edge_index)
    return to_coo_adjacency(edge_index, None, num_nodes, torch.float32, coalesced=False).index


def _sparse_batch(x, edge_index, edge_weight, s, batch, run: SparseCall, validating) -> _Batch:
    """The batch's facts: read here (with the value checks), or from ``run.counts``."""
    if validating:
        # the embeddings' values are the caller's (a diverging model's NaN is its loss's to
        # report), their shape is ours
        check_features(x, dim=2, finite=False)
        _check_s(s, (x.size(0),))
    if run.counts is None:
        batch, counts, host = read_sparse_batch(
            x, edge_index, edge_weight, batch, run.batch_size, validating
        )
    else:
        counts, host = run.counts
        batch = torch.zeros_like(x[:, 0], dtype=torch.long) if batch is None else batch
        batch = as_int64_index(batch)
    max_num_nodes = run.max_num_nodes
    if max_num_nodes is None:
        max_num_nodes = max(host) if host is not None else int(counts.max())
    elif validating:
        check_max_num_nodes(max_num_nodes, host or [])
    elif host is None:  # under torch.compile: a larger graph would spill into the next one's rows
        torch._assert_async(
            (counts <= max_num_nodes).all(), "a graph has more nodes than max_num_nodes"
        )
    mask = torch.arange(max_num_nodes, device=x.device) < counts.unsqueeze(-1)
    return _Batch(batch, counts.numel(), counts, host, max_num_nodes, mask)


class _Assignment(NamedTuple):
    """The assignment in parts of the nodes: one ``[N, C]`` part in node order, or one part
    per size bucket ``[n_k, w_k]`` (layout ``"per_bucket"``, rows in the order of
    :meth:`~diffpool.functional._layouts.SizeBuckets.rows`)."""

    parts: list[Tensor]
    entropy: list[Tensor]  # per row of every part
    graphs: list[Tensor]  # the graph of every row of every part
    cluster_mask: Tensor | None  # [B, C]; None: every slot (fixed budgets)
    inverse: Tensor | None = None  # per-bucket rows back to node order


def _sparse_assignment(s, plan, blocks, b: _Batch, num_clusters, num_slots, options, dtype):
    """``s`` (logits, a head or hard ids) as the assignment of :func:`sparse_diff_pool`."""
    if not _is_soft(s):
        ids = s.long()
        s_flat, entropy = one_hot_assignment(ids, num_slots, dtype)
        cluster_mask = torch.zeros(b.size, num_slots, dtype=torch.bool, device=ids.device)
        cluster_mask[b.batch, ids] = True
        return _Assignment([s_flat], [entropy], [b.batch], cluster_mask)
    budgets = cluster_mask = None
    if options.ratio is not None:
        budgets = cluster_budgets(b.counts, options.ratio, num_clusters)
        cluster_mask = cluster_mask_from_budgets(budgets, num_slots)
    if plan.layout == "per_bucket":
        return _bucket_assignment(s, blocks, plan.widths, b, budgets, cluster_mask)
    if isinstance(s, AssignmentHead):
        logits = s.logits(num_slots)
    else:
        logits = s[:, :num_slots]
    slot_mask = None if cluster_mask is None else cluster_mask.index_select(0, b.batch)
    s_flat, entropy = masked_assignment(logits, slot_mask)
    return _Assignment([s_flat], [entropy], [b.batch], cluster_mask)


def _bucket_assignment(s, blocks, widths, b: _Batch, budgets, cluster_mask) -> _Assignment:
    """Per size bucket ``k``: the assignment of its nodes over its first ``widths[k]``
    slots, each node's softmax over its graph's budget."""
    rows, inverse = blocks.rows()
    graphs = [b.batch.index_select(0, r) for r in rows]
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
    return _Assignment(parts, entropies, graphs, cluster_mask, inverse)


def pool_sparse(x, edge_index, s, batch, edge_weight, options: PoolOptions, run: SparseCall):
    """:func:`sparse_diff_pool` with its options gathered (what the layers call)."""
    _check_options(options.link_loss, options.ratio, options.loss_normalization)
    validating = run.validate and not torch.compiler.is_compiling()
    b = _sparse_batch(x, edge_index, edge_weight, s, batch, run, validating)
    num_clusters = _num_clusters(s, options.num_clusters)
    num_slots = _num_slots(num_clusters, options.ratio, b.max_num_nodes)
    soft = _is_soft(s)
    if validating and not soft:
        check_assignment(s, (x.size(0),), num_slots)
    plan = _plan(x, edge_index, b, num_slots, options, run, soft)
    blocks = _node_blocks(plan, b)
    dtype = _float_dtype(x)
    assignment = _sparse_assignment(s, plan, blocks, b, num_clusters, num_slots, options, dtype)
    dtype = assignment.parts[0].dtype
    adj = to_coo_adjacency(edge_index, edge_weight, x.size(0), dtype, coalesced=_sparse(plan))
    products = _products(plan, blocks, adj, assignment, b.batch, num_slots)
    main = products(x, out=None if torch.is_autocast_enabled() else x.dtype)
    pooled = _coarsen_all(plan, blocks, main, x.size(-1), num_slots, adj, b.batch)
    losses = _sparse_losses(options, plan, blocks, adj, assignment, b, products, main, pooled[2])
    dense_s = _dense_assignment(assignment, b, num_slots) if run.return_assignment else None
    return _output(options, pooled[:2], dense_s, (b.mask, assignment.cluster_mask), losses, x)


def _sparse(plan: Plan) -> bool:
    """Whether the layout multiplies a sparse (coalesced) adjacency (else: the padded
    batch's dense block)."""
    return plan.layout != "padded"


def _plan(x, edge_index, b: _Batch, num_slots, options, run: SparseCall, soft: bool) -> Plan:
    if b.host_counts is None:  # under torch.compile: static shapes (the padded layout)
        return plan_sparse(None, run.layout, soft=soft)
    shape = BatchShape(b.host_counts, _num_edges(edge_index), x.size(-1), num_slots, options.ratio)
    factored = run.factored and options.link_loss != "bce"
    return plan_sparse(shape, run.layout, soft=soft, factored=factored)


def _node_blocks(plan: Plan, b: _Batch):
    if plan.layout == "padded":
        return PaddedBatch(b.batch, b.counts, b.max_num_nodes, b.mask)
    ptr = torch.cat([b.counts.new_zeros(1), b.counts.cumsum(0)])
    return SizeBuckets(ptr, b.host_counts, plan.buckets, plan.heads)


def _num_edges(edge_index) -> int:
    if isinstance(edge_index, Tensor) and edge_index.layout == torch.strided:
        return edge_index.size(1)
    return edge_index.nnz() if hasattr(edge_index, "nnz") else edge_index._nnz()


def _products(plan: Plan, blocks, adj, assignment: _Assignment, batch: Tensor, num_slots):
    r"""``products(z, compute=None, out=None)``: the
    :class:`~diffpool.functional._layouts.BlockProducts` of the plan's layout, with
    :math:`\mathbf{S}` taken in the dtype ``compute`` and the blocks in ``out`` (``z``
    :obj:`None`: :math:`\mathbf{A}\mathbf{S}` alone, for the link loss's terms in another
    dtype)."""
    widths = plan.widths or [num_slots] * blocks.num_blocks
    adj_parts = adj_blocks = None
    if plan.layout == "per_bucket":
        adj_parts = blocks.split_adjacency(adj)
    elif not _sparse(plan):
        adj_blocks = blocks.dense_adjacency(adj, batch)

    def products(z, compute=None, out=None):
        parts = assignment.parts
        if compute is not None:
            parts = [p.to(compute) for p in parts]
        if adj_parts is not None:
            return bucket_products(blocks, adj_parts, parts, z, out)
        if adj_blocks is not None:
            return dense_products(blocks, adj_blocks, parts[0], z, widths, out)
        return sparse_products(blocks, adj, parts[0], z, widths, out)

    return products


def _coarsen_all(plan: Plan, blocks, main: BlockProducts, features, num_slots, adj, batch):
    """``x`` ``[B, C, F]`` and ``adj`` ``[B, C, C]`` of the batch from the blocks (``adj`` a
    :class:`~diffpool.functional._factored.CoarsenedAdjacency` where the plan keeps buckets
    factored), and the factored buckets' :class:`~diffpool.functional._factored.
    FactoredAdjacency` by bucket."""
    factored = plan.factored or [False] * blocks.num_blocks
    xs, adjs = [], []
    for s_block, rhs, keep in zip(main.s, main.rhs, factored):
        if keep:  # S^T Z only: A' stays as its factors
            xs.append(coarsen(s_block, rhs[..., :features], features)[0])
            adjs.append(None)
        else:
            x_block, adj_block = coarsen(s_block, rhs, features)
            xs.append(x_block)
            adjs.append(adj_block)
    if not any(factored):
        x, adj_pool = pad_slots(blocks.reassemble(xs), blocks.reassemble(adjs), num_slots)
        return x, adj_pool, {}
    which = [k for k, keep in enumerate(factored) if keep]
    dense = blocks.dense_adjacency(adj, batch, which)  # the sparse layout's factored buckets
    parts = {k: FactoredAdjacency(main.s[k], a.to(main.s[k].dtype)) for k, a in zip(which, dense)}
    adj_pool = CoarsenedAdjacency(
        blocks.buckets, [parts.get(k, a) for k, a in enumerate(adjs)], num_slots
    )
    return blocks.reassemble(xs), adj_pool, parts


def _per_graph(values: list[Tensor], graphs: list[Tensor], batch_size: int) -> Tensor:
    """Per-row values of the assignment's parts, summed per graph, ``[B]``."""
    out = values[0].new_zeros(batch_size)
    for graph, v in zip(graphs, values):
        out = out.index_add(0, graph, v)
    return out


def _sparse_losses(options, plan, blocks, adj, assignment, b: _Batch, products, main, factored):
    """Per-graph link and entropy losses, ``[B]`` each, in float32 or wider also under
    autocast (the Frobenius identity subtracts large terms and loses all precision in bf16)."""
    with torch.autocast(device_type=b.batch.device.type, enabled=False):
        dtype = assignment.parts[0].dtype
        nodes = b.counts.clamp(min=1).to(dtype)
        link_div, entropy_div = loss_divisors(options.loss_normalization, nodes, b.max_num_nodes)
        entropy = torch.zeros_like(nodes)
        if options.entropy_loss:
            entropy = _per_graph(assignment.entropy, assignment.graphs, b.size) / entropy_div
        one_block = main.adj is not None and len(main.s) == 1  # the padded layout
        if options.link_loss == "frobenius" and one_block and residual_pays(main.s[0].shape):
            # S in the losses' dtype, not the output's (a bfloat16 x without autocast)
            run = main if main.s[0].dtype == dtype else products(None, compute=dtype)
            link = residual_link_loss(run.s[0], main.adj[0], link_div)
        elif options.link_loss == "frobenius":

            def terms(d: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
                run = main if main.s[0].dtype == d else products(None, compute=d)
                return _sparse_link_terms(plan, blocks, adj, run, b, factored, d)

            link = frobenius_per_graph(terms, dtype, link_div)
        elif options.link_loss == "bce":
            link = _sparse_bce(plan, blocks, adj, assignment, b, main, dtype) / nodes.pow(2)
        else:
            link = torch.zeros_like(nodes)
    return link, entropy


def _sparse_link_terms(plan, blocks, adj, run: BlockProducts, b: _Batch, factored, dtype):
    """The three ``[B]`` terms of the Frobenius identity, from the blocks of ``run``."""
    traces, grams, squares = [], [], []
    for k, (s_block, rhs) in enumerate(zip(run.s, run.rhs)):
        adj_block = None if run.adj is None else run.adj[k].to(dtype)
        width = s_block.size(-1)
        square, trace, gram = link_terms(s_block, rhs[..., rhs.size(-1) - width :], adj_block)
        part = factored.get(k)
        if part is not None and part.dtype == dtype:  # its Gram matrix serves both
            gram = part.gram.pow(2).sum((-2, -1))
        traces.append(trace)
        grams.append(gram)
        squares.append(square)
    if run.adj is None:  # duplicate edges summed by the coalesce
        adj_sq = adj._replace(value=adj.value.to(dtype)).squared_norm_per_graph(b.batch, b.size)
    else:
        adj_sq = blocks.reassemble(squares)
    return adj_sq, blocks.reassemble(traces), blocks.reassemble(grams)


def _sparse_bce(plan, blocks, adj, assignment: _Assignment, b: _Batch, main, dtype) -> Tensor:
    """Per-graph BCE sums over all pairs: from the dense blocks where the layout has them,
    else the pairs with :math:`A = 0` per bucket and a correction on the edges."""
    masks = blocks.masks()
    if main.adj is not None:
        sums = [
            bce_link_loss_sum(s_block.to(dtype), mask, a.to(dtype))
            for s_block, mask, a in zip(main.s, masks, main.adj)
        ]
        return blocks.reassemble(sums)
    pairs = blocks.reassemble(
        [bce_link_loss_sum(s_block.to(dtype), mask) for s_block, mask in zip(main.s, masks)]
    )
    parts = blocks.split_adjacency(adj) if plan.layout == "per_bucket" else [adj]
    edges = sum(
        bce_edge_correction(p, a.index, a.value, graph, b.size)
        for p, a, graph in zip(assignment.parts, parts, assignment.graphs)
    )
    return pairs + edges


def _dense_assignment(assignment: _Assignment, b: _Batch, num_slots: int) -> Tensor:
    """The ``[B, N_max, C]`` assignment, padded rows and unused slots zero."""
    s_flat = assignment.parts[0]
    if assignment.inverse is not None:  # per-bucket parts back to node order
        padded = [torch.nn.functional.pad(p, (0, num_slots - p.size(-1))) for p in assignment.parts]
        s_flat = torch.cat(padded).index_select(0, assignment.inverse)
    return to_dense_batch(s_flat, b.batch, batch_size=b.size, max_num_nodes=b.max_num_nodes)[0]


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
    losses, :math:`N_g = \sum_i M_{gi}` real nodes per graph. Finite entries of ``adj``
    outside the mask are ignored (with ``validate``, NaN and infinite values are refused
    anywhere in ``adj``). The positional arguments are those of
    :func:`torch_geometric.nn.dense_diff_pool`; :func:`dense_diff_pool` returns what that
    returns.

    Args:
        x (torch.Tensor): Node embeddings :math:`\mathbf{Z}`, ``[B, N, F]`` (or ``[N, F]``).
        adj (torch.Tensor): Adjacency ``[B, N, N]`` (or ``[N, N]``).
        s (torch.Tensor or AssignmentHead): ``[B, N, C]`` logits, ``[B, N]`` hard cluster ids
            (entries of padded nodes are ignored), or an :class:`AssignmentHead`.
        mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes.
            (default: :obj:`None`)
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
        loss_normalization (str, optional): ``"per_graph"``, ``"pyg"`` or
            ``"pyg_unnormalized"``, as for :func:`sparse_diff_pool`; PyG's normalisation pads
            to ``N = x.size(-2)``. (default: :obj:`"per_graph"`)
        return_assignment (bool, optional): Build the dense ``[B, N, C]`` assignment
            (``output.s``); no loss needs it. (default: :obj:`True`)
        validate (bool, optional): Check the inputs (synchronises with the device; skipped
            under ``torch.compile``). (default: :obj:`True`)

    Returns:
        DiffPoolOutput: ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]``, ``s`` ``[B, N, C]`` (or
        :obj:`None`), ``mask`` ``[B, N]``, ``cluster_mask`` ``[B, C]`` and the losses.
    """
    options = PoolOptions(
        num_clusters,
        ratio,
        link_loss,
        entropy_loss,
        link_loss_coef,
        entropy_loss_coef,
        loss_normalization,
    )
    return pool_padded(x, adj, s, mask, options, return_assignment, validate)


def pool_padded(
    x, adj, s, mask, options: PoolOptions, return_assignment: bool = True, validate: bool = True
) -> DiffPoolOutput:
    """:func:`padded_diff_pool` with its options gathered (what the layers call); ``adj`` may
    be the previous level's :class:`~diffpool.functional._factored.FactoredAdjacency` (pooled
    through its factors, never built)."""
    _check_options(options.link_loss, options.ratio, options.loss_normalization)
    validating = validate and not torch.compiler.is_compiling()
    x = x.unsqueeze(0) if x.dim() == 2 else x
    adj = adj.unsqueeze(0) if adj.dim() == 2 else adj
    if mask is not None and mask.dim() == 1:
        mask = mask.unsqueeze(0)
    factored = isinstance(adj, FactoredAdjacency)
    if validating:
        # the embeddings' values are the caller's, the adjacency's are input (as for the layer)
        check_dense_inputs(x, adj, mask, finite=False, finite_adj=True, factored=factored)
        _check_s(s, tuple(x.shape[:2]))
    # without a mask every node is real: the masking is skipped (fixed budgets' deeper levels,
    # where it would copy [B, C, C] tensors to change nothing)
    masked = mask is not None
    if factored and masked:
        adj, factored = adj.to_dense(), False
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    num_clusters = _num_clusters(s, options.num_clusters)
    num_slots = _num_slots(num_clusters, options.ratio, x.size(1))
    s, entropy, cluster_mask = _padded_assignment(
        s, mask if masked else None, num_clusters, num_slots, options.ratio, x, validating
    )
    with torch.autocast(device_type=x.device.type, enabled=False):
        if masked:
            adj = torch.where(mask.unsqueeze(-1) & mask.unsqueeze(-2), adj.to(s.dtype), 0.0)
        elif not factored:
            adj = adj.to(s.dtype)
        adj_s = None if factored else torch.bmm(adj, s)
    pooled = _padded_coarsen(x, adj, s, adj_s)
    losses = _padded_losses(options, adj, s, adj_s, mask, entropy, pooled[1])
    return _output(
        options, pooled, s if return_assignment else None, (mask, cluster_mask), losses, x
    )


def _padded_assignment(s, mask, num_clusters, num_slots, ratio, x, validating):
    """``s`` (logits, a head or hard ids) as a padded ``[B, N, C]`` assignment, zero on the
    padded rows (``mask`` :obj:`None`: none), its row entropies and the cluster mask."""
    full = mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if not _is_soft(s):
        s = s.unsqueeze(0) if s.dim() == 1 else s
        if validating:
            check_assignment(s, tuple(full.shape), num_slots, full)
        s, entropy = one_hot_assignment(torch.where(full, s, 0), num_slots, _float_dtype(x))
        s = s * full.unsqueeze(-1).to(s.dtype)
        return s, entropy, s.sum(1) > 0
    if isinstance(s, AssignmentHead):
        features = s.features.unsqueeze(0) if s.features.dim() == 2 else s.features
        logits = s._replace(features=features).logits(num_slots)
    else:
        logits = (s.unsqueeze(0) if s.dim() == 2 else s)[..., :num_slots]
    if mask is not None:  # where, not a product: 0 * inf (a -inf masking of padding) is NaN
        logits = torch.where(mask.unsqueeze(-1), logits, 0.0)
    cluster_mask = None
    if ratio is not None:
        budgets = cluster_budgets(full.sum(-1), ratio, num_clusters)
        cluster_mask = cluster_mask_from_budgets(budgets, num_slots)
    s, entropy = masked_assignment(logits, None if cluster_mask is None else cluster_mask[:, None])
    if mask is not None:
        s = torch.where(mask.unsqueeze(-1), s, 0.0)
        entropy = torch.where(mask, entropy, 0.0)
    return s, entropy, cluster_mask


def _padded_coarsen(x, adj, s, adj_s) -> tuple[Tensor, Tensor]:
    """``x`` and ``adj`` of the coarsened batch (``adj_s`` :obj:`None`: ``adj`` factored)."""
    s_pool = s if torch.is_autocast_enabled() else s.to(x.dtype)
    features = x.size(-1)
    if adj_s is None:  # a factored A' = S_prev^T A S_prev is pooled through its factors
        with torch.autocast(device_type=x.device.type, enabled=False):
            adj_pool = adj.congruence(s)
        return coarsen(s_pool, x, features)[0], adj_pool.to(s_pool.dtype)
    return coarsen(s_pool, torch.cat([x, adj_s.to(s_pool.dtype)], -1), features)


def _padded_losses(options, adj, s, adj_s, mask, entropy, adj_pool) -> tuple[Tensor, Tensor]:
    """Per-graph link and entropy losses of a padded batch, ``[B]`` each (``adj_pool``: the
    coarsened S^T A S, whose trace is the link loss's middle term where ``adj`` is factored)."""
    with torch.autocast(device_type=s.device.type, enabled=False):
        nodes = mask.sum(-1).clamp(min=1).to(s.dtype)
        link_div, entropy_div = loss_divisors(options.loss_normalization, nodes, mask.size(-1))
        entropy = entropy.sum(-1) / entropy_div
        if not options.entropy_loss:
            entropy = torch.zeros_like(entropy)
        if options.link_loss == "frobenius" and adj_s is not None and residual_pays(s.shape):
            link = residual_link_loss(s, adj, link_div)
        elif options.link_loss == "frobenius":

            def terms(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
                s_d = s.to(dtype)
                if adj_s is None:  # factored: A' = S_prev^T A S_prev
                    adj_d = adj.to(dtype)
                    # tr(S^T A S) from the coarsened adjacency, not a second congruence
                    pooled = adj_pool if adj_pool.dtype == dtype else adj_d.congruence(s_d)
                    trace = pooled.diagonal(dim1=-2, dim2=-1).sum(-1)
                    return adj_d.squared_norm(), trace, gram_squared_norm(s_d)
                adj_d = adj.to(dtype)
                product = adj_s if dtype == s.dtype else torch.bmm(adj_d, s_d)
                return link_terms(s_d, product, adj_d)

            link = frobenius_per_graph(terms, s.dtype, link_div)
        elif options.link_loss == "bce":
            dense = adj.to_dense() if adj_s is None else adj
            link = bce_link_loss_sum(s, mask, dense) / nodes.pow(2)
        else:
            link = torch.zeros_like(nodes)
    return link, entropy


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

    Where PyG's and this one differ: the link loss is computed per graph (from the residual
    for a small batch, as PyG does; for a large one from three per-graph terms, without a
    :math:`B \times N \times N` residual, in float64 where float32 would lose its digits),
    entries of ``adj`` outside the ``mask`` are
    ignored (PyG adds them to its link loss; :func:`~torch_geometric.utils.to_dense_adj`'s
    padding is zero), the entropy is exact (PyG's adds :math:`10^{-15}` inside the log) and the
    inputs are checked: a graph the mask leaves without nodes is an error (PyG pools it to
    zeros).

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
    if mask is not None and mask.is_floating_point():  # PyG takes a 0/1 float mask too
        mask = mask > 0
    out = padded_diff_pool(
        x,
        adj,
        s,
        mask,
        loss_normalization="pyg" if normalize else "pyg_unnormalized",
        return_assignment=False,
    )
    return out.x, out.adj, out.link_loss, out.entropy_loss
