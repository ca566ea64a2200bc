"""Embeddings of categorical node and edge features (atom and bond types, labels)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class CategoricalEncoder(torch.nn.Module):
    r"""Embeds integer features, one column per categorical variable: the sum of one
    embedding per column,

    .. math::
        \mathbf{h}_i = \sum_{k} \mathbf{E}_k[x_{ik}],

    as OGB's ``AtomEncoder`` / ``BondEncoder`` do for their fixed vocabularies (use those for
    OGB molecules; this one for any, e.g. ZINC's atom and bond types). Give it as a
    ``node_encoder`` / ``edge_encoder`` of :class:`~diffpool.training.GraphDataModule`.

    Args:
        cardinalities (int or Sequence[int]): The number of values of each column.
        out_channels (int): The embedding width.

    Shapes:
        - **input:** ``[N]`` or ``[N, K]`` integers, column ``k`` in
          ``[0, cardinalities[k])``
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, cardinalities: int | Sequence[int], out_channels: int):
        super().__init__()
        if isinstance(cardinalities, int):
            cardinalities = [cardinalities]
        self.cardinalities = [int(c) for c in cardinalities]
        if not self.cardinalities or min(self.cardinalities) < 1:
            raise ValueError(f"cardinalities must be positive, got {cardinalities}")
        self.out_channels = out_channels
        self.embeddings = torch.nn.ModuleList(
            torch.nn.Embedding(c, out_channels) for c in self.cardinalities
        )
        self.reset_parameters()

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        for embedding in self.embeddings:
            torch.nn.init.xavier_uniform_(embedding.weight)

    def forward(self, x: Tensor) -> Tensor:
        r"""The summed embeddings ``[N, out_channels]`` of ``x``, ``[N]`` or ``[N, K]``
        integers (column ``k`` in ``[0, cardinalities[k])``; a value outside is an error)."""
        x = x.view(-1, 1) if x.dim() == 1 else x
        if x.is_floating_point() or x.size(1) != len(self.embeddings):
            raise ValueError(
                f"{type(self).__name__} takes [N, {len(self.embeddings)}] integer features, "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        limits = torch.tensor(self.cardinalities, device=x.device)
        bad = (x < 0) | (x >= limits)
        if bool(bad.any()):
            column = int(bad.any(0).nonzero()[0])
            raise ValueError(
                f"column {column} holds {int(x[:, column][bad[:, column]][0])}, outside "
                f"[0, {self.cardinalities[column]}): raise cardinalities[{column}]"
            )
        return sum(emb(x[:, k]) for k, emb in enumerate(self.embeddings))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cardinalities}, {self.out_channels})"
