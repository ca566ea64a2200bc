"""Deeper DiffPool levels: a dense, padded batch in, a coarsened dense batch out."""

from __future__ import annotations

import torch
from torch import Tensor

from diffpool.functional.assignment import masked_assignment
from diffpool.functional.losses import bce_link_loss_sum, gram_squared_norm
from diffpool.nn.base import DiffPoolBase
from diffpool.nn.encoders import DenseGNNEncoder
from diffpool.nn.output import DiffPoolOutput
from diffpool.utils.validation import check_assignment, check_dense_inputs


class DenseDiffPoolConv(DiffPoolBase):
    r"""The dense counterpart of :class:`~diffpool.nn.DiffPoolConv`, for the levels after the
    first pooling (or for batches that are dense already).

    .. math::
        \mathbf{Z} &= \mathrm{GNN}_{\mathrm{embed}}(\mathbf{A}, \mathbf{X}, \mathbf{M}), \qquad
        \mathbf{S} = \mathrm{softmax}(\mathrm{GNN}_{\mathrm{pool}}(\mathbf{A}, \mathbf{X},
        \mathbf{M})) \odot \mathbf{M}

        \mathbf{X}' &= \mathbf{S}^{\top} \mathbf{Z}, \qquad
        \mathbf{A}' = \mathbf{S}^{\top} \mathbf{A} \mathbf{S}

    with :math:`\mathbf{X} \in \mathbb{R}^{B \times N \times F}`,
    :math:`\mathbf{A} \in \mathbb{R}^{B \times N \times N}` and node mask
    :math:`\mathbf{M} \in \{0, 1\}^{B \times N}` (after a pooling level, the previous level's
    ``cluster_mask``). Cluster budgets and losses are exactly those of
    :class:`~diffpool.nn.DiffPoolConv`, with :math:`N_g = \sum_i M_{gi}` real nodes per graph:

    .. math::
        \mathcal{L}_{LP} &= \frac{1}{B} \sum_g \frac{1}{N_g}
        \|\mathbf{A}_g - \mathbf{S}_g \mathbf{S}_g^{\top}\|_F

        \mathcal{L}_{E} &= \frac{1}{B} \sum_g \frac{1}{N_g} \sum_{i \in g}
        -\sum_c S_{ic} \log S_{ic}

    (``"bce"``: :math:`\frac{1}{B}\sum_g \frac{1}{N_g^2}\sum_{i,j \in g} -A_{ij}\log(P_{ij}+
    \epsilon) - (1-A_{ij})\log(1-P_{ij}+\epsilon)`, :math:`\mathbf{P} = \min(\mathbf{S}
    \mathbf{S}^\top, 1)`, :math:`\epsilon = 10^{-7}`). Entries of :math:`\mathbf{A}` outside
    the mask are ignored.

    Args:
        embed (torch.nn.Module): dense :math:`\mathrm{GNN}_{\mathrm{embed}}` called as
            ``embed(x, adj, mask)`` (e.g. a stack of :class:`~torch_geometric.nn.DenseSAGEConv`),
            returning ``[B, N, F']``.
        pool (torch.nn.Module): dense :math:`\mathrm{GNN}_{\mathrm{pool}}`, returning
            ``[B, N, num_clusters]`` logits.
        num_clusters (int): The number of clusters :math:`C` (the cap with a ``ratio``).
        ratio (float, optional): If set, per-graph budgets
            :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot N_g \rceil)`; the output then has
            :math:`\min(C, \lceil \mathrm{ratio} \cdot N \rceil)` slots. (default: :obj:`None`)
        link_loss (str, optional): ``"frobenius"``, ``"bce"`` or ``"none"``.
            (default: :obj:`"frobenius"`)
        link_loss_coef (float, optional): Weight of the link loss. (default: :obj:`1.0`)
        entropy_loss (bool, optional): Whether to compute the entropy loss.
            (default: :obj:`True`)
        entropy_loss_coef (float, optional): Weight of the entropy loss. (default: :obj:`1.0`)
        validate (bool, optional): Check the inputs. (default: :obj:`True`)
    """

    encoder_class = DenseGNNEncoder

    def _pool_logits(self, x: Tensor, adj: Tensor, mask: Tensor, num_slots: int) -> Tensor:
        """``[B, N, num_slots]`` pooling logits, zero on padded nodes. With per-graph budgets
        the batch may use fewer slots than the pooling GNN's :math:`C` outputs: where that GNN
        ends in a linear map (:class:`~diffpool.nn.DenseGNNEncoder` with ``lin=True``), only
        its first ``num_slots`` outputs are computed."""
        head = self.pool.lin if isinstance(self.pool, DenseGNNEncoder) else None
        if head is None or num_slots == head.out_features:
            logits = self.pool(x, adj, mask)
            self._check_logits(logits)
            return logits[..., :num_slots]
        self._check_pool_channels(head.out_features)
        features = self.pool(x, adj, mask, project=False)
        bias = None if head.bias is None else head.bias[:num_slots]
        logits = torch.nn.functional.linear(features, head.weight[:num_slots], bias)
        return logits * mask.unsqueeze(-1).to(logits.dtype)

    def forward(
        self,
        x: Tensor,
        adj: Tensor,
        mask: Tensor | None = None,
        *,
        assignment: Tensor | None = None,
        return_assignment: bool = True,
    ) -> DiffPoolOutput:
        r"""Pool a dense batch.

        Args:
            x (torch.Tensor): Node features ``[B, N, F]`` (or ``[N, F]`` for one graph).
            adj (torch.Tensor): Adjacency ``[B, N, N]`` (or ``[N, N]``).
            mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes.
                (default: :obj:`None`)
            assignment (torch.Tensor, optional): ``[B, N]`` hard cluster id of every node
                (entries of padded nodes are ignored). :math:`\mathbf{S}` is then its one-hot
                matrix, ``pool`` is not called, the entropy is zero and ``cluster_mask`` marks
                the clusters that hold at least one node. (default: :obj:`None`)
            return_assignment (bool, optional): If set to :obj:`False`, the output's ``s`` is
                :obj:`None`, as for :class:`~diffpool.DiffPoolConv`. (default: :obj:`True`)

        Returns:
            DiffPoolOutput: ``x`` ``[B, C, F']``, ``adj`` ``[B, C, C]``, ``s`` ``[B, N, C]``
            (or :obj:`None`), ``mask`` ``[B, N]``, ``cluster_mask`` ``[B, C]`` and the
            losses.
        """
        if isinstance(x, Tensor) and x.dim() == 2:
            x = x.unsqueeze(0)
        if isinstance(adj, Tensor) and adj.dim() == 2:
            adj = adj.unsqueeze(0)
        if isinstance(mask, Tensor) and mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if self._validating():
            check_dense_inputs(x, adj, mask)
        batch_size, num_nodes = x.shape[:2]
        if mask is None:
            mask = torch.ones(batch_size, num_nodes, dtype=torch.bool, device=x.device)

        self._check_pool(assignment)
        num_slots = self._num_slots(num_nodes)
        z = self.embed(x, adj, mask)
        if assignment is None:
            logits = self._pool_logits(x, adj, mask, num_slots)
            cluster_mask = self._cluster_mask(mask.sum(-1), num_slots)
            slot_mask = None if cluster_mask is None else cluster_mask.unsqueeze(1)
            s, entropy = masked_assignment(logits, slot_mask)
            s = s * mask.unsqueeze(-1).to(s.dtype)
        else:
            if self._validating():
                check_assignment(assignment, tuple(mask.shape), num_slots, mask)
            assignment = torch.where(mask, assignment, 0)  # padded entries may be anything
            dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
            s, entropy = self._fixed_assignment(assignment, num_slots, dtype)
            s = s * mask.unsqueeze(-1).to(s.dtype)
            cluster_mask = s.sum(1) > 0

        pair_mask = mask.unsqueeze(-1) & mask.unsqueeze(-2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            adj = torch.where(pair_mask, adj.to(s.dtype), 0.0)
            adj_times_s = torch.bmm(adj, s)
        s_t = s.transpose(1, 2)
        s_pool = s_t if torch.is_autocast_enabled() else s_t.to(z.dtype)
        return self._output(
            x=torch.bmm(s_pool, z),
            adj=torch.bmm(s_pool, adj_times_s.to(s_pool.dtype)),
            s=s if return_assignment else None,
            mask=mask,
            cluster_mask=cluster_mask,
            entropy_sum=torch.where(mask, entropy, 0.0).sum(-1),
            adj_sq_norm=lambda: adj.pow(2).sum((-2, -1)),
            trace=lambda: (s * adj_times_s).sum((-2, -1)),
            gram_sq_norm=lambda: gram_squared_norm(s),
            bce_sum=lambda: bce_link_loss_sum(s, mask, adj),
            z=z,
            loss_dtype=s.dtype,
        )
