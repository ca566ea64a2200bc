"""Encoder stacks for the embedding and pooling GNNs, in a sparse and a dense form.

An *encoder type* pairs a sparse PyG message-passing layer (for the first level) with its dense
counterpart (for the levels after pooling). Register your own with :func:`register_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.nn import (
    DenseGATConv,
    DenseGCNConv,
    DenseGINConv,
    DenseSAGEConv,
    GATConv,
    GCNConv,
    GINConv,
    SAGEConv,
)
from torch_geometric.nn.inits import reset
from torch_geometric.nn.models import MLP


@dataclass(frozen=True)
class EncoderType:
    """Factories ``(in_channels, out_channels) -> layer`` for the sparse and the dense form.

    The sparse layer is called as ``layer(x, edge_index)`` (``edge_weight=`` too when
    ``weighted``); the dense one as ``layer(x, adj, mask)``.
    """

    sparse: Callable[[int, int], torch.nn.Module]
    dense: Callable[[int, int], torch.nn.Module]
    weighted: bool = False


ENCODERS: dict[str, EncoderType] = {}


def register_encoder(
    name: str,
    sparse: Callable[[int, int], torch.nn.Module],
    dense: Callable[[int, int], torch.nn.Module],
    weighted: bool = False,
    overwrite: bool = False,
) -> None:
    """Make an encoder type available by name (e.g. to ``from_encoder`` and the configs)."""
    if name in ENCODERS and not overwrite:
        raise ValueError(f"encoder {name!r} is already registered (pass overwrite=True)")
    ENCODERS[name] = EncoderType(sparse, dense, weighted)


def get_encoder(name: str) -> EncoderType:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; registered: {sorted(ENCODERS)}") from None


def _gin_mlp(in_channels: int, out_channels: int) -> MLP:
    return MLP([in_channels, out_channels, out_channels], norm=None)


register_encoder("sage", SAGEConv, DenseSAGEConv)
register_encoder("gcn", GCNConv, DenseGCNConv, weighted=True)
register_encoder(
    "gin", lambda i, o: GINConv(_gin_mlp(i, o)), lambda i, o: DenseGINConv(_gin_mlp(i, o))
)
register_encoder("gat", GATConv, DenseGATConv)


class _EncoderStack(torch.nn.Module):
    def __init__(
        self,
        encoder: str,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        dense: bool = False,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.encoder = encoder
        spec = get_encoder(encoder)
        factory = spec.dense if dense else spec.sparse
        self.weighted = spec.weighted and not dense
        sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = torch.nn.ModuleList(factory(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self):
        for conv in self.convs:
            reset(conv)

    def _act(self, x: Tensor, last: bool) -> Tensor:
        if last:
            return x
        x = torch.relu(x)
        return torch.nn.functional.dropout(x, self.dropout, self.training)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.encoder}', {self.in_channels}, "
            f"{self.out_channels}, num_layers={len(self.convs)})"
        )


class GNNEncoder(_EncoderStack):
    """A stack of sparse message-passing layers with ReLU and dropout between them."""

    def forward(self, x: Tensor, edge_index, edge_weight: Tensor | None = None) -> Tensor:
        for i, conv in enumerate(self.convs):
            if self.weighted and edge_weight is not None:
                x = conv(x, edge_index, edge_weight)
            else:
                x = conv(x, edge_index)
            x = self._act(x, last=i == len(self.convs) - 1)
        return x


class DenseGNNEncoder(_EncoderStack):
    """A stack of dense layers (``layer(x, adj, mask)``) with ReLU and dropout between them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, dense=True, **kwargs)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = self._act(conv(x, adj, mask), last=i == len(self.convs) - 1)
        return x
