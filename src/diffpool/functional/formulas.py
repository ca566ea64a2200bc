r"""The math of a DiffPool level, each formula once: the assignment, the coarsened graph and
the auxiliary losses, per graph so that padding never counts.

For graph :math:`g` with :math:`N_g` real nodes, embeddings :math:`\mathbf{Z}_g`, adjacency
:math:`\mathbf{A}_g` and pooling logits :math:`\mathbf{L}_g`:

* Assignment (:func:`masked_assignment`): :math:`\mathbf{S}_g = \mathrm{softmax}(\mathbf{L}_g)`
  over the cluster slots the graph may use, the others exactly zero.
* Coarsened graph (:func:`coarsen`): :math:`\mathbf{X}'_g = \mathbf{S}_g^\top\mathbf{Z}_g`,
  :math:`\mathbf{A}'_g = \mathbf{S}_g^\top(\mathbf{A}_g\mathbf{S}_g)`, both from one batched
  product :math:`\mathbf{S}_g^\top[\mathbf{Z}_g \,|\, \mathbf{A}_g\mathbf{S}_g]`.
* Frobenius link loss (the paper), exact and, for large blocks, without any
  :math:`N \times N` tensor: expanding
  the square, with :math:`\mathbf{A}_g` symmetric or not,

  .. math::
      \|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F^2
      = \|\mathbf{A}_g\|_F^2 - 2\langle \mathbf{A}_g, \mathbf{S}_g\mathbf{S}_g^\top\rangle_F
      + \|\mathbf{S}_g\mathbf{S}_g^\top\|_F^2
      = \|\mathbf{A}_g\|_F^2
      - 2\,\mathrm{tr}(\mathbf{S}_g^\top \mathbf{A}_g \mathbf{S}_g)
      + \|\mathbf{S}_g^\top \mathbf{S}_g\|_F^2,
      \qquad
      \mathcal{L}_{LP,g} = \frac{1}{N_g}\|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F

  (:func:`link_terms` gives the three terms of a block of graphs, :func:`frobenius_link_loss`
  the loss), i.e. the root mean square error over the :math:`N_g^2` entries of
  :math:`\mathbf{A}_g`. Where its terms nearly cancel, a float32 run recomputes them in
  float64 (:func:`frobenius_per_graph`). A small dense block (the planner's
  :func:`~diffpool.functional._plan.residual_pays`) takes the residual
  :math:`\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top` itself instead
  (:func:`residual_link_loss`): no large terms cancel there.
* BCE link loss (what the authors' code trains with), with
  :math:`\mathbf{P} = \min(\mathbf{S}_g\mathbf{S}_g^\top, 1)` and :math:`\epsilon = 10^{-7}`:

  .. math::
      \mathcal{L}_{LP,g} = \frac{1}{N_g^2}\sum_{i,j}
      -A_{ij}\log(P_{ij}+\epsilon) - (1-A_{ij})\log(1-P_{ij}+\epsilon).

* Entropy: :math:`\mathcal{L}_{E,g} = \frac{1}{N_g}\sum_{i} H(\mathbf{S}_{g,i})`.

Each batch loss is the unweighted mean of the per-graph losses.

**PyG's normalisation.** :func:`torch_geometric.nn.dense_diff_pool` divides instead by the
padded batch: with :math:`B` graphs padded to :math:`N` nodes,
:math:`r_g = \|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F` and
:math:`H_g = \sum_i H(\mathbf{S}_{g,i})`,

.. math::
    \mathcal{L}_{LP} = \frac{\sqrt{\sum_g r_g^2}}{B N^2}
    \quad (\texttt{normalize=False}: \sqrt{\textstyle\sum_g r_g^2}), \qquad
    \mathcal{L}_{E} = \frac{1}{B} \sum_g \frac{H_g}{N},

so that for one graph without padding its link loss is ours divided by :math:`N_g` (its
entropy is ours), and in a padded batch both also shrink with the padding.
``loss_normalization="pyg"`` (``"pyg_unnormalized"``: ``normalize=False``) gives these values
(:data:`LOSS_NORMALIZATIONS`, :func:`loss_divisors`, :func:`batch_link_loss`), so that a PyG
model's loss coefficients carry over; it has no BCE form.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

BCE_EPS = 1e-7

#: How the losses are normalised: ``"per_graph"`` (per graph by its own nodes, then the mean
#: over graphs: padding never counts), ``"pyg"`` (:func:`torch_geometric.nn.dense_diff_pool`'s,
#: over the padded batch) and ``"pyg_unnormalized"`` (its ``normalize=False``).
LOSS_NORMALIZATIONS = ("per_graph", "pyg", "pyg_unnormalized")
# Largest number of elements of one temporary block in the chunked BCE computation.
_CHUNK_ELEMENTS = 1 << 22


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
    # a zero probability (a masked slot, a caller's -inf logit) adds 0, not 0 * -inf = NaN: the
    # clamp changes only log S < -1e4, where S = exp(log S) is 0 even in float64
    entropy = -(s * log_s.clamp(min=-1e4)).sum(dim=-1)
    return s, entropy


def one_hot_assignment(ids: Tensor, num_slots: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    r"""The one-hot :math:`\mathbf{S}` of hard cluster ids (``[..., num_slots]``) and its
    entropy, zero."""
    s = torch.nn.functional.one_hot(ids.long(), num_slots).to(dtype)
    return s, s.new_zeros(s.shape[:-1])


def coarsen(s: Tensor, rhs: Tensor, features: int) -> tuple[Tensor, Tensor]:
    r""":math:`\mathbf{X}' = \mathbf{S}^\top\mathbf{Z}` and :math:`\mathbf{A}' =
    \mathbf{S}^\top(\mathbf{A}\mathbf{S})` of a block of graphs, from one batched product.

    Args:
        s (torch.Tensor): ``[b, n, w]`` assignment.
        rhs (torch.Tensor): ``[b, n, F + w]``, :math:`[\mathbf{Z} \,|\, \mathbf{A}\mathbf{S}]`.
        features (int): :math:`F`.

    Returns:
        ``[b, w, F]`` and ``[b, w, w]``. (One product and a split: the backward pass then sees
        one contiguous gradient, where a sum of two products sends ``bmm`` down its slow
        per-graph loop.)
    """
    x, adj = torch.bmm(s.transpose(1, 2), rhs).split([features, rhs.size(-1) - features], -1)
    return x, adj


def link_terms(s: Tensor, adj_s: Tensor, adj: Tensor | None = None) -> tuple[Tensor | None, ...]:
    r"""The three terms of the Frobenius identity of a block of graphs, each ``[b]``:
    :math:`\|\mathbf{A}_g\|_F^2` (from the dense ``adj`` ``[b, n, n]``; :obj:`None` without
    it), :math:`\mathrm{tr}(\mathbf{S}_g^\top\mathbf{A}_g\mathbf{S}_g) = \langle \mathbf{S}_g,
    \mathbf{A}_g\mathbf{S}_g \rangle_F` and :math:`\|\mathbf{S}_g^\top\mathbf{S}_g\|_F^2`
    (:func:`gram_squared_norm`), for ``s`` and ``adj_s`` ``[b, n, w]``."""
    adj_sq = None if adj is None else adj.pow(2).sum((-2, -1))
    return adj_sq, (s * adj_s).sum((-2, -1)), gram_squared_norm(s)


#: below this share of its terms, the Frobenius identity of a float32 run is recomputed in
#: float64 (float32 keeps about 7 digits of each term; their difference loses the rest)
CANCELLATION = 1e-3


def frobenius_per_graph(terms, dtype: torch.dtype, divisor: Tensor) -> Tensor:
    r"""Per-graph link loss :math:`\sqrt{\|A_g\|^2 - 2\,\mathrm{tr}(S_g^\top A_g S_g) +
    \|S_g^\top S_g\|^2} / d_g` from ``terms(dtype)``, the three ``[B]`` terms of every graph.

    Where :math:`S S^\top` fits :math:`A` closely the terms cancel: a float32 difference of
    terms in the hundreds cannot hold a loss of 1e-7 (it came out exactly 0, with a zero
    gradient). When any graph's result is below :data:`CANCELLATION` of its terms, all three
    are recomputed in float64 (only then; under ``torch.compile`` never, to keep the graph
    static)."""
    adj_sq, trace, gram = terms(dtype)
    if dtype != torch.float64 and not torch.compiler.is_compiling():
        sq = adj_sq.to(dtype) - 2.0 * trace + gram
        if bool((sq <= CANCELLATION * (adj_sq.to(dtype) + gram)).any()):
            adj_sq, trace, gram = terms(torch.float64)
            return frobenius_link_loss(adj_sq, trace, gram, divisor.double()).to(dtype)
    return frobenius_link_loss(adj_sq, trace, gram, divisor)


def residual_link_loss(s: Tensor, adj: Tensor, divisor: Tensor) -> Tensor:
    r"""Per-graph :math:`\|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F / d_g` of a dense
    block from the residual itself, in ``divisor``'s dtype (the losses' dtype, float32 or
    wider; ``s`` is taken in it).

    No difference of large terms is taken, so there is nothing to cancel: the loss is exact up
    to the rounding of the entries of :math:`\mathbf{S}\mathbf{S}^\top` (a relative error of
    about :math:`\epsilon \|\mathbf{A}\|_F / \|\mathbf{A} - \mathbf{S}\mathbf{S}^\top\|_F`
    at worst; below 1e-4 on the near-exact fits of the tests, where the identity in float32
    gives 0), and no check for cancellation reads the device from the host (as
    :func:`frobenius_per_graph` must). It costs ``[b, n, n]`` temporaries and :math:`b\,n^2 C`
    multiply-adds: the planner takes it for small blocks
    (:func:`~diffpool.functional._plan.residual_pays`).

    Args:
        s (torch.Tensor): ``[b, n, C]`` assignment, zero on padded rows.
        adj (torch.Tensor): ``[b, n, n]`` adjacency, zero on padded rows and columns.
        divisor (torch.Tensor): ``[b]`` divisors :math:`d_g` (:func:`loss_divisors`).
    """
    s = s.to(divisor.dtype)
    residual = adj.to(divisor.dtype) - torch.bmm(s, s.transpose(1, 2))
    return safe_sqrt(residual.pow(2).sum((-2, -1))) / divisor


def safe_sqrt(value: Tensor) -> Tensor:
    """``sqrt(max(value, 0))`` with a zero (not infinite) gradient at zero; NaN stays NaN (a
    diverging assignment must not give a finite loss)."""
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), value * 0.0)


class _GramSquaredNorm(torch.autograd.Function):
    """Per-graph squared Frobenius norm of the Gram matrix, with a one-matmul backward."""

    @staticmethod
    def forward(ctx, s: Tensor) -> Tensor:
        # ||S^T S||_F = ||S S^T||_F: the smaller of the two, N^2 C or N C^2 multiply-adds
        ctx.rows = s.size(1) < s.size(2)
        gram = torch.bmm(s, s.transpose(1, 2)) if ctx.rows else torch.bmm(s.transpose(1, 2), s)
        ctx.save_for_backward(s, gram)
        return gram.pow(2).sum((-2, -1))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        s, gram = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the saved Gram matrix is no constant
            gram = torch.bmm(s, s.transpose(1, 2)) if ctx.rows else torch.bmm(s.transpose(1, 2), s)
        # d ||S^T S||_F^2 / dS = 4 S (S^T S) = 4 (S S^T) S
        out = torch.bmm(gram, s) if ctx.rows else torch.bmm(s, gram)
        return out.mul_(4.0 * grad.view(-1, 1, 1))


def gram_squared_norm(s: Tensor) -> Tensor:
    r"""Per-graph :math:`\|\mathbf{S}_g^\top\mathbf{S}_g\|_F^2` of a padded ``[B, N, C]`` ``s``.

    It equals :math:`\|\mathbf{S}_g\mathbf{S}_g^\top\|_F^2`, and the smaller of the two
    Gram matrices is built: :math:`N \times N` where a graph has fewer nodes than clusters
    (D&D's fixed :math:`C = 1437` against 284 nodes on average, 5x fewer multiply-adds).
    Autograd through the product would spend two batched matmuls on the backward pass; the
    closed form :math:`4\,\mathbf{S}(\mathbf{S}^\top\mathbf{S})` spends one.
    """
    return _GramSquaredNorm.apply(s)


def frobenius_link_loss_sq(adj_sq_norm: Tensor, trace: Tensor, gram_sq_norm: Tensor) -> Tensor:
    r"""Per-graph :math:`\|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F^2`, clamped at zero,
    from :math:`\|\mathbf{A}_g\|_F^2`, :math:`\mathrm{tr}(\mathbf{S}_g^\top\mathbf{A}_g
    \mathbf{S}_g)` and :math:`\|\mathbf{S}_g^\top\mathbf{S}_g\|_F^2` (all ``[B]``)."""
    return (adj_sq_norm - 2.0 * trace + gram_sq_norm).clamp(min=0.0)


def frobenius_link_loss(
    adj_sq_norm: Tensor, trace: Tensor, gram_sq_norm: Tensor, num_nodes: Tensor
) -> Tensor:
    r"""Per-graph :math:`\frac{1}{N_g}\|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F`
    from the three terms of :func:`frobenius_link_loss_sq` and the node counts (all ``[B]``),
    in the dtype of ``trace``."""
    sq = frobenius_link_loss_sq(adj_sq_norm.to(trace.dtype), trace, gram_sq_norm)
    return safe_sqrt(sq) / num_nodes


def loss_divisors(
    loss_normalization: str, num_nodes: Tensor, num_padded: int
) -> tuple[Tensor, Tensor]:
    r"""Per-graph divisors of :math:`r_g = \|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F`
    and of the entropy sum :math:`H_g`: :math:`(N_g, N_g)` for ``"per_graph"``,
    :math:`(N^2, N)` for ``"pyg"`` and :math:`(1, N)` for ``"pyg_unnormalized"``, with
    ``num_nodes`` the ``[B]`` real node counts :math:`N_g` (at least 1) and ``num_padded`` the
    padded size :math:`N` of the batch."""
    if loss_normalization == "per_graph":
        return num_nodes, num_nodes
    padded = torch.full_like(num_nodes, float(max(int(num_padded), 1)))
    link = padded.pow(2) if loss_normalization == "pyg" else torch.ones_like(num_nodes)
    return link, padded


def batch_link_loss(per_graph: Tensor, loss_normalization: str = "per_graph") -> Tensor:
    r"""The batch's link loss from the ``[B]`` per-graph ones (each :math:`r_g` divided by
    :func:`loss_divisors`): their mean for ``"per_graph"``; PyG's norm over the whole batch,
    :math:`\sqrt{\sum_g r_g^2} / (B N^2)`, for ``"pyg"``, and :math:`\sqrt{\sum_g r_g^2}` for
    ``"pyg_unnormalized"``."""
    if loss_normalization == "per_graph":
        return per_graph.mean()
    total = safe_sqrt(per_graph.pow(2).sum())
    return total / per_graph.numel() if loss_normalization == "pyg" else total


def _bce_block(s_rows: Tensor, s: Tensor, pair_mask: Tensor, adj_rows: Tensor | None) -> Tensor:
    """BCE summed per graph over one block of rows; ``adj_rows`` None means A = 0 there."""
    p = torch.bmm(s_rows, s.transpose(1, 2)).clamp(max=1.0)
    loss = -torch.log(1.0 - p + BCE_EPS)
    if adj_rows is not None:
        loss = loss + adj_rows * (torch.log(1.0 - p + BCE_EPS) - torch.log(p + BCE_EPS))
    return torch.where(pair_mask, loss, 0.0).sum((-2, -1))


def _row_chunk(batch_size: int, num_nodes: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, batch_size * num_nodes))


def bce_link_loss_sum(s: Tensor, mask: Tensor, adj: Tensor | None = None) -> Tensor:
    r"""Per-graph sum of the BCE over all pairs of real nodes, for a dense ``adj`` or ``A = 0``.

    Rows are processed in blocks recomputed in the backward pass, so memory stays at one
    ``[B, rows, N]`` block instead of ``[B, N, N]``.

    Args:
        s (torch.Tensor): ``[B, N, C]`` assignment.
        mask (torch.Tensor): ``[B, N]`` bool node mask.
        adj (torch.Tensor, optional): ``[B, N, N]`` dense adjacency; None means all zeros (the
            sparse level adds its edges with :func:`bce_edge_correction`).

    Returns:
        torch.Tensor: ``[B]`` sums (not yet divided by :math:`N_g^2`).
    """
    batch_size, num_nodes, _ = s.shape
    chunk = _row_chunk(batch_size, num_nodes)
    total = s.new_zeros(batch_size)
    for start in range(0, num_nodes, chunk):
        rows = slice(start, start + chunk)
        pair_mask = mask[:, rows, None] & mask[:, None, :]
        adj_rows = None if adj is None else adj[:, rows]
        args = (s[:, rows], s, pair_mask, adj_rows)
        if torch.is_grad_enabled() and s.requires_grad and num_nodes > chunk:
            total = total + checkpoint(_bce_block, *args, use_reentrant=False)
        else:
            total = total + _bce_block(*args)
    return total


def _edge_block(s_flat: Tensor, src: Tensor, dst: Tensor, weight: Tensor) -> Tensor:
    p = (s_flat[src] * s_flat[dst]).sum(-1).clamp(max=1.0)
    return weight * (torch.log(1.0 - p + BCE_EPS) - torch.log(p + BCE_EPS))


def bce_edge_correction(
    s_flat: Tensor, index: Tensor, value: Tensor, batch: Tensor, batch_size: int
) -> Tensor:
    r"""Per-graph :math:`\sum_{(i,j)} A_{ij}\,[\log(1-P_{ij}+\epsilon) - \log(P_{ij}+\epsilon)]`.

    Added to :func:`bce_link_loss_sum` with ``adj=None`` it gives the exact BCE of a sparse
    adjacency, touching only its edges. Edges are processed in blocks to bound memory.
    """
    num_edges, num_clusters = index.size(1), s_flat.size(1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, num_clusters))
    terms = []
    for start in range(0, num_edges, chunk):
        src, dst = index[0, start : start + chunk], index[1, start : start + chunk]
        args = (s_flat, src, dst, value[start : start + chunk].to(s_flat.dtype))
        if torch.is_grad_enabled() and s_flat.requires_grad and num_edges > chunk:
            terms.append(checkpoint(_edge_block, *args, use_reentrant=False))
        else:
            terms.append(_edge_block(*args))
    per_edge = torch.cat(terms) if terms else s_flat.new_zeros(0)
    return s_flat.new_zeros(batch_size).index_add(0, batch[index[0]], per_edge)
