"""One representation of a sparse batch's connectivity for the pooling algebra.

A user hands the layer ``edge_index`` (with optional ``edge_weight``), a
``torch_sparse.SparseTensor`` or a ``torch.sparse`` matrix. The encoders receive that object
unchanged; the pooling algebra works on :class:`CooAdjacency`, the coalesced COO form of the
adjacency :math:`\\mathbf{A}` with :math:`A_{ij}` the (summed) weight of the edges
:math:`i \\to j` -- the convention of :func:`torch_geometric.utils.to_dense_adj`.

``SparseTensor`` and ``torch.sparse`` inputs follow PyG's ``adj_t`` convention (what
:class:`torch_geometric.transforms.ToSparseTensor` produces): entry ``[i, j]`` is the edge
:math:`j \\to i`, so :math:`\\mathbf{A}` is their transpose.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.utils import coalesce


def is_sparse_tensor(obj) -> bool:
    """Whether ``obj`` is a ``torch_sparse.SparseTensor`` (without importing torch_sparse)."""
    return type(obj).__name__ == "SparseTensor" and hasattr(obj, "storage")


def is_torch_sparse(obj) -> bool:
    return isinstance(obj, Tensor) and obj.layout in (
        torch.sparse_coo,
        torch.sparse_csr,
        torch.sparse_csc,
    )


class CooAdjacency(NamedTuple):
    """Adjacency of a sparse batch, coalesced (duplicate edges summed) unless built with
    ``to_coo_adjacency(..., coalesced=False)``.

    Attributes:
        index (torch.Tensor): ``[2, nnz]`` source and target of every distinct edge.
        value (torch.Tensor): ``[nnz]`` the summed weight of that edge.
        num_nodes (int): the number of nodes :math:`N` of the batch.
    """

    index: Tensor
    value: Tensor
    num_nodes: int

    @torch.compiler.disable  # sparse COO tensors are not traceable: run eagerly
    def matmul(self, other: Tensor) -> Tensor:
        r"""Return :math:`\mathbf{A} \cdot \mathrm{other}` without densifying :math:`\mathbf{A}`."""
        adj = torch.sparse_coo_tensor(
            self.index,
            self.value.to(other.dtype),
            (self.num_nodes, self.num_nodes),
            is_coalesced=True,
            check_invariants=False,
        )
        return torch.sparse.mm(adj, other)

    def squared_norm_per_graph(self, batch: Tensor, batch_size: int) -> Tensor:
        r"""Return :math:`\|\mathbf{A}_g\|_F^2` of every graph ``g``, ``[batch_size]``."""
        out = self.value.new_zeros(batch_size)
        return out.index_add(0, batch[self.index[0]], self.value.pow(2))


def stored_values(adj) -> Tensor | None:
    """The entries a ``SparseTensor`` or ``torch.sparse`` matrix stores, duplicates apart
    (:obj:`None`: a ``SparseTensor`` without values, every edge of weight 1)."""
    if is_sparse_tensor(adj):
        return adj.storage.value()
    # torch.sparse's documented accessor of an uncoalesced COO tensor's values
    return adj._values() if adj.layout == torch.sparse_coo else adj.values()


@torch.compiler.disable  # SparseTensor and torch.sparse conversions are not traceable
def _sparse_coo(edge_index) -> tuple[Tensor, Tensor]:
    """The ``(index, value)`` of ``A`` from a PyG-convention ``adj_t`` sparse matrix."""
    if is_sparse_tensor(edge_index):
        row, col, value = edge_index.coo()  # adj_t: row = target, col = source
        return torch.stack([col, row]), value
    coo = edge_index.to_sparse_coo().coalesce()
    return coo.indices().flip(0), coo.values()


@torch.compiler.disable  # the coalesce's output size depends on the data
def _coalesce(index: Tensor, value: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    return coalesce(index, value, num_nodes=num_nodes, reduce="sum")


def to_coo_adjacency(
    edge_index,
    edge_weight: Tensor | None,
    num_nodes: int,
    dtype: torch.dtype,
    coalesced: bool = True,
) -> CooAdjacency:
    """Bring any accepted connectivity into the :class:`CooAdjacency` form, coalesced unless
    ``coalesced=False`` (for a consumer that sums duplicate edges itself, such as a dense
    ``index_add``: the sort of a coalesce is then saved). An ``edge_index`` without the
    coalesce traces under ``torch.compile`` (the ``"padded"`` layout)."""
    if is_sparse_tensor(edge_index) or is_torch_sparse(edge_index):
        index, value = _sparse_coo(edge_index)
    else:
        index, value = edge_index, edge_weight
    if value is None:
        value = torch.ones(index.size(1), dtype=dtype, device=index.device)
    value = value.to(dtype)
    if coalesced:
        index, value = _coalesce(index, value, num_nodes)
    return CooAdjacency(index, value, num_nodes)
