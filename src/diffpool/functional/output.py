"""The named result of one DiffPool level."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class DiffPoolOutput(NamedTuple):
    r"""What one pooling level returns (a :class:`~typing.NamedTuple`, so it also unpacks).

    Attributes:
        x (torch.Tensor): pooled features :math:`\mathbf{X}' = \mathbf{S}^\top\mathbf{Z}`,
            ``[B, C, F']``.
        adj (torch.Tensor): coarsened adjacency
            :math:`\mathbf{A}' = \mathbf{S}^\top\mathbf{A}\mathbf{S}`, ``[B, C, C]``.
        s (torch.Tensor or None): dense assignment :math:`\mathbf{S}`, ``[B, N_max, C]``;
            padded rows and unused cluster slots are exactly zero. :obj:`None` when the layer
            was called with ``return_assignment=False``.
        mask (torch.Tensor): ``[B, N_max]`` bool mask of the real input nodes.
        cluster_mask (torch.Tensor): ``[B, C]`` bool mask of the clusters each graph uses; the
            node mask of the next dense level.
        link_loss (torch.Tensor): scalar, mean over graphs of the per-graph link loss (zero when
            the link loss is off); with ``loss_normalization="pyg"`` PyG's norm over the whole
            padded batch instead (:func:`~diffpool.functional.formulas.batch_link_loss`).
        entropy_loss (torch.Tensor): scalar, mean over graphs of the per-graph entropy loss
            (zero when the entropy loss is off).
        aux_loss (torch.Tensor): scalar, ``link_loss_coef * link_loss +
            entropy_loss_coef * entropy_loss``: add it to the task loss.
        link_loss_per_graph (torch.Tensor): ``[B]`` per-graph link losses (the Frobenius one
            :math:`\|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F / N_g`; with PyG's
            normalisation the norm divided by :math:`N^2`, the padded size, or not divided).
        entropy_loss_per_graph (torch.Tensor): ``[B]`` per-graph entropy losses, the summed row
            entropies divided by :math:`N_g` (PyG's normalisation: by :math:`N`).
        z (torch.Tensor): the node embeddings :math:`\mathbf{Z}` before pooling, ``[N, F']``
            (flat, sparse level) or ``[B, N_max, F']`` (dense level), e.g. for a readout of the
            level.
    """

    x: Tensor
    adj: Tensor
    s: Tensor | None
    mask: Tensor
    cluster_mask: Tensor
    link_loss: Tensor
    entropy_loss: Tensor
    aux_loss: Tensor
    link_loss_per_graph: Tensor
    entropy_loss_per_graph: Tensor
    z: Tensor
