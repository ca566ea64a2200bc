r"""The coarsened adjacency :math:`\mathbf{A}' = \mathbf{S}^\top\mathbf{A}\mathbf{S}` kept as
its factors, for graphs with fewer nodes than clusters.

With a fixed number of clusters :math:`C` (the paper's budget), a graph of :math:`n \ll C`
nodes still gets a dense :math:`C \times C` adjacency after pooling, of rank at most
:math:`n`: on D&D, :math:`C = 1437` against 284 nodes on average. Every dense layer after
the pooling multiplies it into :math:`C \times F` features, :math:`C^2 F` multiply-adds a
graph. Through its factors, :math:`\mathbf{A}'\mathbf{X} = \mathbf{S}^\top(\mathbf{A}
(\mathbf{S}\mathbf{X}))` costs :math:`(2nC + n^2) F`, and :math:`\mathbf{A}'` itself
(:math:`n C^2`) is never built. :class:`FactoredAdjacency` holds the factors of a group of
graphs; :class:`CoarsenedAdjacency` is a batch's coarsened adjacency as groups, factored or
dense. Private to :class:`~diffpool.models.DiffPoolNet` (its calls with ``return_levels=False``):
no output of the package's functions or layers holds either; which buckets stay factored is
the planner's (``factored_pays`` in :mod:`diffpool.functional._plan`).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from diffpool.functional._layouts import _reassemble


class _Gram(torch.autograd.Function):
    r""":math:`\mathbf{S}\mathbf{S}^\top` per graph, with a one-matmul backward
    :math:`(\mathbf{G}' + \mathbf{G}'^\top)\mathbf{S}` (autograd would spend two)."""

    @staticmethod
    def forward(ctx, s: Tensor) -> Tensor:
        ctx.save_for_backward(s)
        return torch.bmm(s, s.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (s,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), s)


class FactoredAdjacency:
    r""":math:`\mathbf{A}'_g = \mathbf{S}_g^\top\mathbf{A}_g\mathbf{S}_g` of a group of graphs,
    ``[b, C, C]``, as its factors ``s`` ``[b, n, C]`` and ``adj`` ``[b, n, n]`` (zero rows
    for the padding of graphs shorter than ``n``).

    It stands in for the dense tensor where a dense layer only multiplies it (``torch.matmul
    (adj, x)``) and sums its rows (``adj.sum(-1)``): :class:`~torch_geometric.nn.DenseSAGEConv`,
    :class:`~torch_geometric.nn.DenseGINConv`, :class:`~diffpool.nn.DenseSumConv` (see
    :data:`~diffpool.nn.encoders.FACTORED_LAYERS`); any other torch function on it raises a
    :class:`TypeError` (:meth:`to_dense` gives the tensor). The pooling of the next level
    (the model's dense level, through ``pool_padded``) uses :meth:`congruence` and
    :meth:`squared_norm`.
    """

    def __init__(self, s: Tensor, adj: Tensor):
        if s.dim() != 3 or adj.dim() != 3 or adj.shape != (s.size(0), s.size(1), s.size(1)):
            raise ValueError(
                f"need s [b, n, C] and adj [b, n, n], got {tuple(s.shape)} and {tuple(adj.shape)}"
            )
        self.s, self.adj = s, adj
        self._product = None  # the last (x, version, A' x): two GNNs share their first input

    @property
    def shape(self) -> torch.Size:
        b, _, c = self.s.shape
        return torch.Size((b, c, c))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return 3

    @property
    def dtype(self) -> torch.dtype:
        return self.s.dtype

    @property
    def device(self) -> torch.device:
        return self.s.device

    def to(self, dtype: torch.dtype) -> FactoredAdjacency:
        return FactoredAdjacency(self.s.to(dtype), self.adj.to(dtype))

    def matmul(self, x: Tensor) -> Tensor:
        r""":math:`\mathbf{S}^\top(\mathbf{A}(\mathbf{S}\mathbf{X}))` for ``x`` ``[b, C, F]``.

        The product of the last ``x`` is kept: a pooling level's embedding and pooling GNNs
        both start with the same input, and the second gets the first one's product."""
        last = self._product
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        out = self.s.transpose(1, 2) @ (self.adj @ (self.s @ x))
        self._product = (x, x._version, out)
        return out

    def sum(self, dim: int = -1, keepdim: bool = False) -> Tensor:
        r"""Row sums :math:`\mathbf{S}^\top\mathbf{A}\mathbf{S}\mathbf{1}` (``dim=-1``),
        computed once for all the layers that normalise by them."""
        if dim not in (-1, 2):
            raise TypeError("FactoredAdjacency sums its rows only (dim=-1)")
        return self._row_sums if keepdim else self._row_sums.squeeze(-1)

    @functools.cached_property
    def _row_sums(self) -> Tensor:
        return self.s.transpose(1, 2) @ (self.adj @ self.s.sum(-1, keepdim=True))

    @functools.cached_property
    def gram(self) -> Tensor:
        r""":math:`\mathbf{G} = \mathbf{S}\mathbf{S}^\top` ``[b, n, n]``, computed once:
        :meth:`squared_norm` needs it, and :math:`\|\mathbf{G}\|_F^2 = \|\mathbf{S}^\top
        \mathbf{S}\|_F^2` is the pooling's own link-loss term."""
        return _Gram.apply(self.s)

    def to_dense(self) -> Tensor:
        r"""The ``[b, C, C]`` tensor :math:`\mathbf{S}^\top\mathbf{A}\mathbf{S}`."""
        return self.s.transpose(1, 2) @ (self.adj @ self.s)

    def congruence(self, t: Tensor) -> Tensor:
        r""":math:`\mathbf{T}^\top\mathbf{A}'\mathbf{T} = (\mathbf{S}\mathbf{T})^\top\mathbf{A}
        (\mathbf{S}\mathbf{T})` for ``t`` ``[b, C, K]``: the next level's pooled adjacency,
        ``[b, K, K]``, in :math:`nCK + n^2K + nK^2` multiply-adds instead of
        :math:`C^2K + CK^2`."""
        u = self.s @ t
        return u.transpose(1, 2) @ (self.adj @ u)

    def squared_norm(self) -> Tensor:
        r"""Per-graph :math:`\|\mathbf{S}^\top\mathbf{A}\mathbf{S}\|_F^2 = \langle \mathbf{A}
        \mathbf{G}, \mathbf{G}\mathbf{A} \rangle_F` with :math:`\mathbf{G} = \mathbf{S}
        \mathbf{S}^\top` (:math:`n \times n`), ``[b]``."""
        gram = self.gram
        return ((self.adj @ gram) * (gram @ self.adj)).sum((-2, -1))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.bmm) and not kwargs:
            first, second = args
            if isinstance(first, FactoredAdjacency) and isinstance(second, Tensor):
                return first.matmul(second)
        return NotImplemented

    def __repr__(self) -> str:
        b, n, c = self.s.shape
        return f"{type(self).__name__}(graphs={b}, nodes={n}, clusters={c})"


class CoarsenedAdjacency:
    r"""A batch's coarsened adjacency ``[B, C, C]`` as groups of graphs: group ``k`` holds the
    graphs ``index[k]`` and their adjacency ``parts[k]``, a dense ``[b_k, C, C]`` tensor or a
    :class:`FactoredAdjacency`. :meth:`to_dense` gives the tensor in graph order;
    :class:`~diffpool.models.DiffPoolNet` runs its dense levels group by group on the parts."""

    def __init__(self, index: list[list[int]], parts: list, num_clusters: int):
        self.index, self.parts, self.num_clusters = index, parts, num_clusters
        self.num_graphs = sum(len(i) for i in index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.num_graphs, self.num_clusters, self.num_clusters))

    @property
    def num_factored(self) -> int:
        """How many graphs are held as factors."""
        return sum(len(i) for i, p in zip(self.index, self.parts) if not isinstance(p, Tensor))

    def to_dense(self) -> Tensor:
        """The ``[B, C, C]`` tensor, graphs in batch order."""
        dense = [p if isinstance(p, Tensor) else p.to_dense() for p in self.parts]
        device = dense[0].device
        index = [torch.tensor(i, device=device) for i in self.index]
        return _reassemble(dense, index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(graphs={self.num_graphs}, clusters={self.num_clusters}, "
            f"factored={self.num_factored})"
        )
