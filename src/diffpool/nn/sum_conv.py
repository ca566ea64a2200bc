r"""The graph convolution of the DiffPool authors' code: a sum over the neighbours, no self term.

The authors' ``GraphConv`` (github.com/RexYing/diffpool, ``encoders.py``) multiplies the raw,
unnormalised adjacency with the node features (their benchmark loaders build it with
``normalize=False``; ``add_self`` is off whenever the layers' outputs are concatenated, as in
every DiffPool model), then applies a weight and a bias. PyG's ``GraphConv`` adds a root weight
and ``GCNConv`` normalises by the degrees, so neither is that layer; :class:`SumConv` and
:class:`DenseSumConv` are, for the first (sparse) level and the levels after pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import spmm


def _add_weights(module: torch.nn.Module, in_channels: int, out_channels: int, bias: bool):
    """The weight ``lin`` (Glorot initialised, no bias of its own) and the bias of both layers."""
    module.in_channels = in_channels
    module.out_channels = out_channels
    module.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
    module.bias = torch.nn.Parameter(torch.empty(out_channels)) if bias else None


class SumConv(MessagePassing):
    r"""Sum over the neighbours, then a linear map (the DiffPool authors' graph convolution):

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W} \sum_{j \in \mathcal{N}(i)} e_{j,i} \, \mathbf{x}_j
        + \mathbf{b},

    in matrix form :math:`\mathbf{X}^{\prime} = \mathbf{A} \mathbf{X} \mathbf{W}^{\top} +
    \mathbf{b}`, with the raw adjacency (no normalisation, no self-loops, no root weight): a
    node sees its own features only through a self-loop in ``edge_index`` or through the
    2-hop paths of the next layer. :math:`e_{j,i}` is the edge weight (default 1).

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample.
        bias (bool, optional): Learn an additive bias. (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` or a sparse adjacency, edge weights
          :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        _add_weights(self, in_channels, out_channels, bias)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.lin.reset_parameters()
        zeros(self.bias)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        out = self.propagate(edge_index, x=self.lin(x), edge_weight=edge_weight)
        if self.bias is not None:
            out = out + self.bias
        return out

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: SparseTensor, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)


class DenseSumConv(torch.nn.Module):
    r"""The dense counterpart of :class:`SumConv`, for padded batches after pooling:

    .. math::
        \mathbf{X}^{\prime} = \mathbf{A} \mathbf{X} \mathbf{W}^{\top} + \mathbf{b}

    with the (weighted, e.g. coarsened :math:`\mathbf{S}^{\top} \mathbf{A} \mathbf{S}`)
    adjacency as it is: no normalisation and no added self-loops.

    Args:
        in_channels (int): Size of each input sample.
        out_channels (int): Size of each output sample.
        bias (bool, optional): Learn an additive bias. (default: :obj:`True`)

    Shapes:
        - **input:** ``x`` :math:`(B, N, F_{in})`, ``adj`` :math:`(B, N, N)` (either may
          drop the batch dimension), ``mask`` :math:`(B, N)` *(optional)*
        - **output:** :math:`(B, N, F_{out})`; rows outside ``mask`` are zero
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        _add_weights(self, in_channels, out_channels, bias)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin.reset_parameters()
        zeros(self.bias)

    def forward(self, x: Tensor, adj: Tensor, mask: OptTensor = None) -> Tensor:
        r""":math:`\mathbf{A} \mathbf{X} \mathbf{W}^{\top} + \mathbf{b}`, ``[B, N, out_channels]``.

        Args:
            x (torch.Tensor): Node features ``[B, N, in_channels]`` (or ``[N, in_channels]``).
            adj (torch.Tensor): Adjacency ``[B, N, N]`` (or ``[N, N]``), used as it is.
            mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes; the
                output's other rows are zero. (default: :obj:`None`)
        """
        x = x.unsqueeze(0) if x.dim() == 2 else x
        adj = adj.unsqueeze(0) if adj.dim() == 2 else adj
        if adj.size(-1) != x.size(-2) or adj.size(-2) != adj.size(-1):
            raise ValueError(
                f"adj must be [B, N, N] for x of shape [B, N, F], got {tuple(adj.shape)} "
                f"and {tuple(x.shape)}"
            )
        out = torch.matmul(adj, self.lin(x))
        if self.bias is not None:
            out = out + self.bias
        if mask is not None:
            out = out * mask.view(*out.shape[:2], 1).to(out.dtype)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels})"
