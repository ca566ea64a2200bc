"""The flat baselines of the paper's table: one GNN encoder and one global readout."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Set2Set, SortAggregation
from torch_geometric.nn.models import MLP

from diffpool.models.output import ClassifierOutput
from diffpool.models.readout import READOUTS, resolve_batch, sparse_readout
from diffpool.nn.encoders import GNNEncoder

GLOBAL_READOUTS = (*READOUTS, "set2set", "sortpool")


class GlobalPoolNet(torch.nn.Module):
    r"""A GNN encoder block, one global readout over all nodes, and an MLP: no hierarchy.

    * ``readout="mean"`` with ``encoder="sage"`` is the paper's GraphSAGE baseline.
    * ``readout="set2set"``: the Set2Set readout (Vinyals et al., 2016), PyG's
      :class:`~torch_geometric.nn.aggr.Set2Set` with ``set2set_steps`` processing steps.
    * ``readout="sortpool"``: SortPool (Zhang et al., 2018), PyG's
      :class:`~torch_geometric.nn.aggr.SortAggregation`: the ``sortpool_k`` nodes with the
      largest last channel, sorted, flattened into the MLP (DGCNN's 1-D convolutions are left
      out; the MLP sees the same sorted rows).

    Same encoder options as :class:`~diffpool.models.DiffPoolNet`, and the same output type
    (``aux_loss`` is zero and there are no levels), so that both train with one loop.

    Args:
        in_channels (int): Size of each input node feature.
        num_classes (int): Number of classes.
        max_num_nodes (int, optional): The dataset's largest graph. Unused: accepted so that
            every model of the package is built from the same facts of the dataset.
        edge_dim (int, optional): Edge feature width, for encoder types that take edge
            features (``"gine"``, ``"gat"``). (default: :obj:`None`)
            (default: :obj:`None`)
        hidden_channels (int, optional): (default: :obj:`64`)
        encoder (str, optional): (default: :obj:`"sage"`)
        num_layers (int, optional): (default: :obj:`3`)
        readout (str, optional): ``"max"``, ``"mean"``, ``"sum"``, ``"set2set"`` or
            ``"sortpool"``. (default: :obj:`"mean"`)
        dropout (float, optional): (default: :obj:`0.0`)
        norm (str, optional): (default: :obj:`"batch"`)
        concat (bool, optional): (default: :obj:`True`)
        normalize (bool, optional): (default: :obj:`False`)
        mlp_hidden_channels (int, optional): (default: :obj:`50`)
        set2set_steps (int, optional): (default: :obj:`3`)
        sortpool_k (int, optional): (default: :obj:`30`)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        max_num_nodes: int | None = None,
        *,
        edge_dim: int | None = None,
        hidden_channels: int = 64,
        encoder: str = "sage",
        num_layers: int = 3,
        readout: str = "mean",
        dropout: float = 0.0,
        norm: str | None = "batch",
        concat: bool = True,
        normalize: bool = False,
        mlp_hidden_channels: int = 50,
        set2set_steps: int = 3,
        sortpool_k: int = 30,
    ):
        super().__init__()
        if readout not in GLOBAL_READOUTS:
            raise ValueError(f"readout must be one of {GLOBAL_READOUTS}, got {readout!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"need in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}"
            )
        self.in_channels, self.num_classes, self.readout = in_channels, num_classes, readout
        self.encoder = GNNEncoder(
            encoder,
            in_channels,
            hidden_channels,
            hidden_channels,
            num_layers=num_layers,
            dropout=dropout,
            norm=norm,
            concat=concat,
            normalize=normalize,
            edge_dim=edge_dim,
        )
        self.edge_dim = edge_dim
        channels = self.encoder.out_channels
        self.aggr = None
        if readout == "set2set":
            self.aggr = Set2Set(channels, processing_steps=set2set_steps)
            channels *= 2
        elif readout == "sortpool":
            self.aggr = SortAggregation(k=sortpool_k)
            channels *= sortpool_k
        sizes = [channels, mlp_hidden_channels] if mlp_hidden_channels else [channels]
        self.mlp = MLP([*sizes, num_classes], norm=None, dropout=dropout)

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        self.encoder.reset_parameters()
        if self.aggr is not None:
            self.aggr.reset_parameters()
        self.mlp.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index,
        batch: Tensor | None = None,
        edge_weight: Tensor | None = None,
        *,
        batch_size: int | None = None,
        edge_attr: Tensor | None = None,
    ) -> ClassifierOutput:
        """Classify a sparse mini-batch (``edge_attr``: for a model built with
        ``edge_dim``)."""
        batch, batch_size = resolve_batch(x, batch, batch_size)
        z = self.encoder(x, edge_index, edge_weight, edge_attr=edge_attr)
        if self.aggr is None:
            h = sparse_readout(self.readout, z, batch, batch_size)
        else:
            h = self.aggr(z, batch, dim_size=batch_size)
        zero = h.new_zeros(())
        return ClassifierOutput(
            logits=self.mlp(h),
            aux_loss=zero,
            link_loss=h.new_zeros(0),
            entropy_loss=h.new_zeros(0),
        )

    def forward_batch(
        self, data, return_assignments: bool = True, return_levels: bool = True
    ) -> ClassifierOutput:
        """:meth:`forward` on a PyG mini-batch (there are no assignments or levels to
        return)."""
        return self(
            data.x,
            data.edge_index,
            data.batch,
            data.get("edge_weight"),
            batch_size=data.num_graphs,
            edge_attr=data.get("edge_attr") if self.edge_dim is not None else None,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.num_classes}, "
            f"encoder='{self.encoder.encoder}', readout='{self.readout}')"
        )
