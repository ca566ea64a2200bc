"""Deeper DiffPool levels: a dense, padded batch in, a coarsened dense batch out."""

from __future__ import annotations

from torch import Tensor

from diffpool.functional._factored import FactoredAdjacency
from diffpool.functional.diff_pool import pool_padded
from diffpool.functional.output import DiffPoolOutput
from diffpool.nn.base import DiffPoolBase
from diffpool.nn.encoders import DenseGNNEncoder
from diffpool.utils.validation import check_dense_inputs, explains_input


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
    \mathbf{S}^\top, 1)`, :math:`\epsilon = 10^{-7}`). Finite entries of :math:`\mathbf{A}`
    outside the mask are ignored (NaN and infinite values are refused anywhere in it). With
    ``loss_normalization="pyg"`` the losses are those of
    :func:`torch_geometric.nn.dense_diff_pool` on the same padded inputs (:math:`N` = the
    input's node dimension), see :class:`~diffpool.nn.DiffPoolConv`.

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
        head (torch.nn.Linear, optional): A linear map from ``pool``'s output to the logits,
            computed only for the slots the batch uses. (default: :obj:`None`)
        loss_normalization (str, optional): ``"per_graph"``, ``"pyg"`` or
            ``"pyg_unnormalized"``, as for :class:`~diffpool.nn.DiffPoolConv`.
            (default: :obj:`"per_graph"`)
        pool_on (str, optional): ``"input"`` (``pool(x, adj, mask)``) or ``"embedding"``
            (``pool(z)``), as for :class:`~diffpool.nn.DiffPoolConv`. (default: :obj:`"input"`)

    The computation itself is :func:`diffpool.functional.padded_diff_pool`.
    """

    encoder_class = DenseGNNEncoder

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
        return self._pool(x, adj, mask, assignment, return_assignment)

    @explains_input(lambda layer: getattr(layer.embed, "in_channels", None))
    def _pool(
        self,
        x,
        adj,
        mask,
        assignment,
        return_assignment,
        validate: bool = True,
        num_nodes: int | None = None,
    ):
        """:meth:`forward`; ``validate=False`` where the caller built the inputs itself
        (:class:`~diffpool.models.DiffPoolNet`'s levels after the first, whose inputs are its own);
        ``num_nodes``: the number of real nodes, where the caller knows it on the host (for
        the batch norm of :class:`~diffpool.nn.DenseGNNEncoder` GNNs)."""
        if isinstance(x, Tensor) and x.dim() == 2:
            x = x.unsqueeze(0)
        if isinstance(adj, Tensor) and adj.dim() == 2:
            adj = adj.unsqueeze(0)
        if isinstance(mask, Tensor) and mask.dim() == 1:
            mask = mask.unsqueeze(0)
        validating = self._validating() and validate
        if validating:  # what the GNNs need, before they run
            check_dense_inputs(x, adj, mask, factored=isinstance(adj, FactoredAdjacency))
        z = self.embed(x, adj, mask, **_counted(self.embed, num_nodes))
        s = self._assignment(
            lambda: self.pool(x, adj, mask, **_counted(self.pool, num_nodes)), assignment, z=z
        )
        return pool_padded(z, adj, s, mask, self._options(), return_assignment, validating)

    def forward_groups(
        self,
        xs: list[Tensor],
        adjs: list[Tensor],
        masks: list[Tensor],
        *,
        return_assignment: bool = True,
        validate: bool = True,
        num_nodes: list[int] | None = None,
    ) -> list[DiffPoolOutput]:
        r""":meth:`forward` on a batch split into groups of graphs, each padded only to its own
        largest graph (grouped by :class:`~diffpool.models.DiffPoolNet`): one output per
        group, each graph's as on the whole padded batch up to float rounding (batch norm
        takes its statistics over all groups together). Needs the pooling GNN (no fixed
        assignment); each output's losses are its group's (with PyG's normalisation, of the
        group's own padding). ``num_nodes[k]``: group ``k``'s real nodes where the caller
        knows them on the host, for the batch norm of
        :class:`~diffpool.nn.DenseGNNEncoder` GNNs (see its ``forward``)."""
        if self.pool is None:
            raise ValueError("forward_groups needs the pooling GNN (no fixed assignment)")
        if self._validating() and validate:
            for x, adj, mask in zip(xs, adjs, masks):
                check_dense_inputs(x, adj, mask, factored=isinstance(adj, FactoredAdjacency))
        zs = self.embed.forward_groups(xs, adjs, masks, **_counted(self.embed, num_nodes))
        if self.pool_on == "embedding":
            pooled = [self._assignment(None, None, z=z) for z in zs]
        else:
            pooled = [
                self._assignment(lambda p=p: p, None)
                for p in self.pool.forward_groups(xs, adjs, masks, **_counted(self.pool, num_nodes))
            ]
        return [
            pool_padded(
                z,
                adj,
                p,
                mask,
                self._options(),
                return_assignment,
                validate=False,
            )
            for z, adj, mask, p in zip(zs, adjs, masks, pooled)
        ]


def _counted(gnn, num_nodes) -> dict:
    """``num_nodes`` as a keyword for a GNN that takes it (:class:`~diffpool.nn.DenseGNNEncoder`);
    other GNNs are called as PyG's dense layers are."""
    given = num_nodes is not None and isinstance(gnn, DenseGNNEncoder)
    return {"num_nodes": num_nodes} if given else {}
