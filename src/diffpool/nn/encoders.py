"""Encoder stacks for the embedding and pooling GNNs, in a sparse and a dense form.

An *encoder type* pairs a sparse PyG message-passing layer (for the first level) with its dense
counterpart (for the levels after pooling). Register your own with :func:`register_encoder`.
"""

from __future__ import annotations

import functools
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
    GINEConv,
    SAGEConv,
)
from torch_geometric.nn.inits import reset
from torch_geometric.nn.models import MLP

from diffpool.functional._factored import FactoredAdjacency
from diffpool.nn.sum_conv import DenseSumConv, SumConv
from diffpool.utils.validation import as_int64_index, explains_input


@dataclass(frozen=True)
class EncoderType:
    """Factories ``(in_channels, out_channels) -> layer`` for the sparse and the dense form.

    The sparse layer is called as ``layer(x, edge_index)`` (``edge_weight=`` too when
    ``weighted``); the dense one as ``layer(x, adj, mask)``. An ``edge`` type takes edge
    features at the sparse level: its sparse factory is called with ``edge_dim=`` (the
    feature width, or :obj:`None` without edge features) and the layer as
    ``layer(x, edge_index, edge_attr=...)``; ``edge_required``: it cannot run without them.
    The dense levels (after pooling) have no edge features.
    """

    sparse: Callable[..., torch.nn.Module]
    dense: Callable[[int, int], torch.nn.Module]
    weighted: bool = False
    edge: bool = False
    edge_required: bool = False


ENCODERS: dict[str, EncoderType] = {}


def register_encoder(
    name: str,
    sparse: Callable[[int, int], torch.nn.Module],
    dense: Callable[[int, int], torch.nn.Module],
    weighted: bool = False,
    overwrite: bool = False,
    edge: bool = False,
    edge_required: bool = False,
) -> None:
    """Make an encoder type available by name (e.g. to ``from_encoder`` and the configs).
    ``edge=True``: ``sparse(in_channels, out_channels, edge_dim=...)`` builds a layer that
    takes ``edge_attr`` (see :class:`EncoderType`)."""
    if name in ENCODERS and not overwrite:
        raise ValueError(f"encoder {name!r} is already registered (pass overwrite=True)")
    ENCODERS[name] = EncoderType(sparse, dense, weighted, edge or edge_required, edge_required)


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
register_encoder(
    "gine",
    lambda i, o, edge_dim=None: GINEConv(_gin_mlp(i, o), edge_dim=edge_dim),
    lambda i, o: DenseGINConv(_gin_mlp(i, o)),
    edge_required=True,
)
register_encoder("gat", GATConv, DenseGATConv, edge=True)
# the DiffPool authors' layer: A X W + b on the raw adjacency (see diffpool.nn.sum_conv)
register_encoder("sum", SumConv, DenseSumConv, weighted=True)


NORMS = (None, "batch")

#: Dense layers that only multiply the adjacency into the features and sum its rows: they run
#: on a :class:`~diffpool.functional._factored.FactoredAdjacency` as it is; any other layer
#: gets it as a dense tensor.
FACTORED_LAYERS: tuple[type, ...] = (DenseSAGEConv, DenseGINConv, DenseSumConv)


@dataclass(frozen=True)
class _AffineForm:
    """A layer whose output is affine in a few inputs: ``conv(h) == v @ m.T`` with
    ``(v, m) = form(conv, h, edge_index, edge_weight)``, ``v`` ``[N, K]``, ``m``
    ``[out, K]``; ``num_inputs(conv)`` is ``K``, or :obj:`None` for a configuration that is
    not affine (see :meth:`GNNEncoder.fold_head`)."""

    num_inputs: Callable[[torch.nn.Module], int | None]
    form: Callable[..., tuple[Tensor, Tensor]]


def _with_bias(parts: list[Tensor], weights: list[Tensor], bias: Tensor | None):
    if bias is not None:
        parts = [*parts, parts[0].new_ones(parts[0].size(0), 1)]
        weights = [*weights, bias.unsqueeze(-1)]
    return torch.cat(parts, dim=-1), torch.cat(weights, dim=-1)


def _sage_inputs(conv: SAGEConv) -> int | None:
    if conv.project or conv.normalize or not conv.root_weight:
        return None
    bias = conv.lin_l.bias is not None
    return conv.lin_l.in_channels + conv.lin_r.in_channels + bias


def _sage_form(conv: SAGEConv, h: Tensor, edge_index, edge_weight=None):
    aggregated = conv.propagate(edge_index, x=(h, h), size=None)
    return _with_bias([aggregated, h], [conv.lin_l.weight, conv.lin_r.weight], conv.lin_l.bias)


def _sum_inputs(conv: SumConv) -> int:
    return conv.lin.in_channels + (conv.bias is not None)


def _sum_form(conv: SumConv, h: Tensor, edge_index, edge_weight=None):
    aggregated = conv.propagate(edge_index, x=h, edge_weight=edge_weight)
    return _with_bias([aggregated], [conv.lin.weight], conv.bias)


_AFFINE_FORMS = {
    SAGEConv: _AffineForm(_sage_inputs, _sage_form),
    SumConv: _AffineForm(_sum_inputs, _sum_form),
}
# torch.nn.functional.normalize's default eps
_NORM_EPS = 1e-12


class _EncoderStack(torch.nn.Module):
    def __init__(
        self,
        encoder: str,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        *,
        norm: str | None = None,
        concat: bool = False,
        normalize: bool = False,
        lin: bool = False,
        dense: bool = False,
        edge_dim: int | None = None,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.encoder = encoder
        spec = get_encoder(encoder)
        factory = spec.dense if dense else spec.sparse
        self.weighted = spec.weighted and not dense
        if edge_dim is not None and (dense or not spec.edge):
            where = "dense levels have" if dense else f"encoder {encoder!r} takes"
            raise ValueError(f"edge_dim={edge_dim} given, but {where} no edge features")
        if edge_dim is None and spec.edge_required and not dense:
            raise ValueError(
                f"encoder {encoder!r} needs edge features: give edge_dim (data with edge_attr)"
            )
        #: the width of the edge features the layers take (:obj:`None`: none)
        self.edge_dim = edge_dim
        if spec.edge and not dense:
            factory = functools.partial(factory, edge_dim=edge_dim)
        sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = torch.nn.ModuleList(factory(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = torch.nn.ModuleList(
            MaskedBatchNorm(size) for size in sizes[1:-1] if norm == "batch"
        )
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.dropout, self.norm, self.concat, self.normalize = dropout, norm, concat, normalize
        stacked = sum(sizes[1:]) if concat else out_channels
        self.lin = torch.nn.Linear(stacked, out_channels) if lin else None
        #: Width of the output: ``out_channels``, or the concatenated widths of all layers
        #: when ``concat`` is set without ``lin``.
        self.out_channels = out_channels if lin else stacked
        self.reset_parameters()

    def reset_parameters(self):
        for module in [*self.convs, *self.norms, self.lin]:
            if module is not None:
                reset(module)

    def _layer_output(
        self, i: int, x: Tensor, mask: Tensor | None = None, num_nodes: int | None = None
    ) -> Tensor:
        """L2 normalisation, then (between layers) activation, norm and dropout."""
        return self._layer_outputs(i, [x], [mask], None if num_nodes is None else [num_nodes])[0]

    def _layer_outputs(
        self, i: int, xs: list[Tensor], masks: list, num_nodes: list[int] | None = None
    ) -> list[Tensor]:
        """:meth:`_layer_output` of several groups of graphs; batch norm takes one set of
        statistics over all of them (``num_nodes``: see :meth:`MaskedBatchNorm.forward_groups`)."""
        if self.normalize:
            xs = [torch.nn.functional.normalize(x, p=2.0, dim=-1) for x in xs]
        if i == len(self.convs) - 1:
            return xs
        xs = [torch.relu(x) for x in xs]
        if self.norms:
            norm = self.norms[i]
            if len(xs) > 1 or num_nodes is not None:
                xs = norm.forward_groups(xs, masks, num_nodes)
            else:
                xs = [norm(xs[0]) if masks[0] is None else norm(xs[0], masks[0])]
        return [torch.nn.functional.dropout(x, self.dropout, self.training) for x in xs]

    def _combine(self, outputs: list[Tensor]) -> Tensor:
        x = torch.cat(outputs, dim=-1) if self.concat else outputs[-1]
        return x if self.lin is None else self.lin(x)

    def __repr__(self) -> str:
        extras = [f"num_layers={len(self.convs)}"]
        extras += [f"norm='{self.norm}'"] if self.norm else []
        extras += [f"{k}=True" for k in ("concat", "normalize") if getattr(self, k)]
        extras += ["lin=True"] if self.lin is not None else []
        return (
            f"{type(self).__name__}('{self.encoder}', {self.in_channels}, "
            f"{self.out_channels}, {', '.join(extras)})"
        )


class GNNEncoder(_EncoderStack):
    r"""A stack of sparse message-passing layers (the first DiffPool level).

    Every layer but the last is followed by ReLU, batch norm (``norm="batch"``) and dropout; with
    ``normalize=True`` each layer's output is first L2-normalised (the GraphSAGE paper's
    option). With ``concat=True`` the output is the concatenation of all layers' outputs, as in
    the DiffPool authors' code; ``lin=True`` adds a final linear map to ``out_channels`` (what
    the authors' assignment GNN does).

    Args:
        encoder (str): A registered encoder type (``"sage"``, ``"gcn"``, ``"gin"``, ``"gat"``,
            ``"sum"`` (the DiffPool authors' layer, :class:`~diffpool.nn.SumConv`) or your
            own, see :func:`register_encoder`).
        in_channels (int): Size of each input feature.
        hidden_channels (int): Size of the hidden layers.
        out_channels (int): Size of the last layer.
        num_layers (int, optional): Number of layers. (default: :obj:`2`)
        dropout (float, optional): Dropout between layers. (default: :obj:`0.0`)
        norm (str, optional): ``"batch"`` or :obj:`None`. (default: :obj:`None`)
        concat (bool, optional): Concatenate every layer's output. (default: :obj:`False`)
        normalize (bool, optional): L2-normalise every layer's output. (default: :obj:`False`)
        lin (bool, optional): Final linear map to ``out_channels``. (default: :obj:`False`)
        dense (bool, optional): Stack the encoder type's dense layers instead, called as
            ``layer(x, adj, mask)`` (what :class:`DenseGNNEncoder` does; use that one).
            (default: :obj:`False`)
        edge_dim (int, optional): Width of the edge features, for encoder types that take
            them (``"gine"``, ``"gat"``). (default: :obj:`None`)

    Shapes:
        - **input:** ``x`` ``[N, F]``, ``edge_index`` ``[2, E]`` (or a sparse adjacency),
          optional ``edge_weight`` ``[E]`` and ``edge_attr`` ``[E, edge_dim]``
        - **output:** ``[N, self.out_channels]``
    """

    @explains_input()
    def forward(
        self,
        x: Tensor,
        edge_index,
        edge_weight: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        r"""The stack's output ``[N, self.out_channels]``.

        Args:
            x (torch.Tensor): Node features ``[N, in_channels]``.
            edge_index (torch.Tensor or SparseTensor): ``[2, E]`` edge indices, a
                ``torch_sparse.SparseTensor`` or a ``torch.sparse`` ``[N, N]`` matrix.
            edge_weight (torch.Tensor, optional): ``[E]`` edge weights, given to the layers
                that take them. (default: :obj:`None`)
            edge_attr (torch.Tensor, optional): ``[E, edge_dim]`` edge features, for encoder
                types that take them. (default: :obj:`None`)
        """
        edge_index = as_int64_index(edge_index)  # int32 (valid in PyG): torch's scatter needs int64
        edge_attr = self._edge_features(edge_attr)
        outputs = self._hidden_outputs(x, edge_index, edge_weight, edge_attr)
        x = self._conv(
            self.convs[-1], outputs[-1] if outputs else x, edge_index, edge_weight, edge_attr
        )
        outputs.append(self._layer_output(len(self.convs) - 1, x))
        return self._combine(outputs)

    @explains_input()
    def fold_head(
        self,
        x: Tensor,
        edge_index,
        edge_weight: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        r"""The stack's output in a form that a linear map folds into its last layer.

        Returns ``(features, fold)`` such that, for any map ``weight`` ``[C,
        self.out_channels]`` of the output with its last ``K_L`` columns acting on the last
        layer, ``self(x, edge_index) @ weight.T`` equals ``features @ [weight[:, :-K_L] |
        weight[:, -K_L:] @ fold].T`` up to float rounding (what
        :class:`~diffpool.functional.AssignmentHead` computes with its ``fold``); or
        :obj:`None` where the fold does not apply.

        It applies to a concatenating stack (``concat=True``, no ``lin``) whose last layer is
        affine in a few inputs :math:`\mathbf{v}_i` (:class:`~torch_geometric.nn.SAGEConv`:
        :math:`\mathbf{W}_l \, \mathrm{mean}_j \mathbf{h}_j + \mathbf{W}_r \mathbf{h}_i +
        \mathbf{b} = \mathbf{M} [\mathrm{mean}_j \mathbf{h}_j; \mathbf{h}_i; 1]`;
        :class:`~diffpool.nn.SumConv`) and wider than them. The last layer's ``[N, K_L]``
        output is then never built; ``features`` holds :math:`\mathbf{v}` ``[N, K]`` in its
        place, ``fold`` is :math:`\mathbf{M}` ``[K_L, K]``, and with ``normalize=True`` the
        row norms come from the Gram matrix, :math:`\|\mathbf{M}\mathbf{v}_i\|^2 =
        \mathbf{v}_i^\top \mathbf{M}^\top \mathbf{M} \mathbf{v}_i`. A pooling GNN with
        thousands of cluster outputs (D&D's :math:`C = 1437`) then costs about what its
        hidden layers cost.
        """
        last = self.convs[-1]
        affine = _AFFINE_FORMS.get(type(last))
        if not self.concat or self.lin is not None or affine is None or len(self.convs) < 2:
            return None
        inputs = affine.num_inputs(last)
        if inputs is None or inputs >= last.out_channels:
            return None  # the fold would not make the map narrower
        edge_index = as_int64_index(edge_index)  # int32 (valid in PyG): torch's scatter needs int64
        edge_attr = self._edge_features(edge_attr)
        outputs = self._hidden_outputs(x, edge_index, edge_weight, edge_attr)
        v, m = affine.form(last, outputs[-1], edge_index, edge_weight if self.weighted else None)
        if self.normalize:  # F.normalize's max(||u||, eps), from the Gram matrix
            squared = ((v @ (m.t() @ m)) * v).sum(dim=-1)
            v = v * squared.clamp(min=_NORM_EPS**2).rsqrt().unsqueeze(-1)
        return torch.cat([*outputs, v], dim=-1), m

    def _conv(self, conv, x: Tensor, edge_index, edge_weight, edge_attr) -> Tensor:
        if self.edge_dim is not None:
            return conv(x, edge_index, edge_attr=edge_attr)
        if self.weighted and edge_weight is not None:
            return conv(x, edge_index, edge_weight)
        return conv(x, edge_index)

    def _edge_features(self, edge_attr: Tensor | None) -> Tensor | None:
        if self.edge_dim is None:
            return edge_attr
        if edge_attr is None:
            raise ValueError(
                f"this {self.encoder} encoder was built for edge features (edge_dim="
                f"{self.edge_dim}) but got no edge_attr"
            )
        return edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr

    def _hidden_outputs(self, x: Tensor, edge_index, edge_weight, edge_attr) -> list[Tensor]:
        """The outputs of every layer but the last."""
        outputs = []
        for i, conv in enumerate(self.convs[:-1]):
            x = self._layer_output(i, self._conv(conv, x, edge_index, edge_weight, edge_attr))
            outputs.append(x)
        return outputs


class DenseGNNEncoder(_EncoderStack):
    r"""The dense counterpart of :class:`GNNEncoder` (levels after pooling): layers called as
    ``layer(x, adj, mask)`` on ``x`` ``[B, N, F]`` and ``adj`` ``[B, N, N]``.

    Batch norm uses the real nodes of ``mask`` only (:class:`MaskedBatchNorm`); padded rows of
    the output are zero. Same arguments as :class:`GNNEncoder`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, dense=True, **kwargs)

    def _adjacencies(self, adjs: list) -> list:
        """What each layer gets: a :class:`~diffpool.functional._factored.FactoredAdjacency`
        as it is where every layer is in :data:`FACTORED_LAYERS`, else as a dense tensor."""
        if all(isinstance(conv, FACTORED_LAYERS) for conv in self.convs):
            return adjs
        return [a.to_dense() if isinstance(a, FactoredAdjacency) else a for a in adjs]

    @explains_input()
    def forward(
        self, x: Tensor, adj: Tensor, mask: Tensor | None = None, *, num_nodes: int | None = None
    ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[B, N, F]`` node features.
            adj (torch.Tensor): ``[B, N, N]`` adjacency.
            mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real nodes.
                (default: :obj:`None`: every node)
            num_nodes (int, optional): The number of real nodes (true entries of ``mask``),
                where the caller knows it on the host: batch norm (``norm="batch"``) then
                gathers them (``torch.nonzero_static``, no synchronisation) and normalises
                them with torch's fused batch norm instead of masked statistics; a count
                that differs from the mask's is an error. (default: :obj:`None`)

        Returns:
            torch.Tensor: ``[B, N, out_channels]``, padded rows zero.
        """
        (adj,) = self._adjacencies([adj])
        outputs = []
        for i, conv in enumerate(self.convs):
            x = self._layer_output(i, conv(x, adj, mask), mask, num_nodes)
            outputs.append(x)
        out = self._combine(outputs)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out

    @explains_input()
    def forward_groups(
        self,
        xs: list[Tensor],
        adjs: list[Tensor],
        masks: list[Tensor],
        *,
        num_nodes: list[int] | None = None,
    ) -> list[Tensor]:
        """:meth:`forward` on a batch split into groups of graphs, each padded only to its own
        largest graph (``xs[k]`` ``[b_k, n_k, F]``, ``adjs[k]``, ``masks[k]``, and
        optionally ``num_nodes[k]``): the same result as on the whole padded batch, up to
        float rounding; batch norm still takes its statistics over the real nodes of all
        groups together."""
        adjs = self._adjacencies(adjs)
        outputs: list[list[Tensor]] = [[] for _ in xs]
        for i, conv in enumerate(self.convs):
            xs = [conv(x, adj, mask) for x, adj, mask in zip(xs, adjs, masks)]
            xs = self._layer_outputs(i, xs, masks, num_nodes)
            for out, x in zip(outputs, xs):
                out.append(x)
        outs = [self._combine(out) for out in outputs]
        return [
            out if mask is None else out * mask.unsqueeze(-1).to(out.dtype)
            for out, mask in zip(outs, masks)
        ]


def _real_rows(masks: list[Tensor | None], counts: list[int]) -> list[Tensor | None] | None:
    """The flat index of every block's real rows (:obj:`None`: a block without a mask), of
    the sizes the caller knows (checked against the masks on the device, without a
    synchronisation: a wrong count would gather the wrong rows); :obj:`None` where the device
    has no ``nonzero_static`` (CUDA before torch 2.6): the caller then takes the masked
    statistics."""
    index = []
    for mask, count in zip(masks, counts):
        if mask is None:
            index.append(None)
            continue
        torch._assert_async(mask.sum() == count, "num_nodes differs from the mask's count")
        try:
            index.append(torch.nonzero_static(mask.reshape(-1), size=count).squeeze(-1))
        except NotImplementedError:
            return None
    return index


class MaskedBatchNorm(torch.nn.BatchNorm1d):
    r"""Batch norm over the real nodes of a padded dense batch ``[B, N, F]`` (or of the rows
    of ``[N, F]``).

    The statistics (and the running averages) come from the rows where ``mask`` is true only;
    padded rows of the output are zero. (The DiffPool authors' code and PyG's dense example
    normalise over all :math:`B \cdot N` rows, so that the padding shifts the statistics.) A
    training step with a single row, which has no batch statistics (a batch of one 1-node
    graph; one cluster at a deeper level), is normalised with the running ones instead.

    Where the caller knows the number of real rows on the host (``num_nodes``), they are
    gathered (:func:`torch.nonzero_static`, of that size: no synchronisation; the count is
    checked against the mask on the device) and normalised by
    :class:`torch.nn.BatchNorm1d` itself, fused; a single block without a mask (every row
    real, of two rows or more) is too. Otherwise the masked statistics are sums over the
    padded rows with the padding set to zero: no output whose size depends on the mask, so
    no synchronisation with the device and static shapes under ``torch.compile``.
    """

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, num_nodes: int | None = None
    ) -> Tensor:
        r"""
        Args:
            x (torch.Tensor): ``[B, N, F]`` padded rows, or ``[N, F]`` (every row real).
            mask (torch.Tensor, optional): ``[B, N]`` bool mask of the real rows.
                (default: :obj:`None`: every row)
            num_nodes (int, optional): The number of true entries of ``mask``, where the
                caller knows it on the host: the real rows are then gathered and normalised
                fused. (default: :obj:`None`)
        """
        if x.dim() == 2:
            return self.forward_groups([x.unsqueeze(0)], [None])[0].squeeze(0)
        return self.forward_groups([x], [mask], None if num_nodes is None else [num_nodes])[0]

    def forward_groups(
        self,
        xs: list[Tensor],
        masks: list[Tensor | None],
        num_nodes: list[int] | None = None,
    ) -> list[Tensor]:
        """Batch norm over the real rows of several padded blocks ``[b_k, n_k, F]`` together
        (one set of statistics, as over the whole batch); a mask :obj:`None`: every row of
        its block is real. ``num_nodes[k]``: the number of true entries of ``masks[k]`` (of
        rows, where it is :obj:`None`), as for :meth:`forward`."""
        if num_nodes is not None and len(num_nodes) != len(xs):
            raise ValueError(f"num_nodes has {len(num_nodes)} counts for {len(xs)} blocks")
        if len(xs) == 1 and masks[0] is None and xs[0].numel() >= 2 * xs[0].size(-1):
            # every row real (the sparse first level, fixed cluster counts): one fused op where
            # the masked statistics take about thirty; a training step on synthetic N_max 50
            # with fixed C took 18% less time (24.2 vs 29.7 ms, in-process A/B, 10 rounds)
            x = xs[0]
            return [super().forward(x.reshape(-1, x.size(-1))).view_as(x)]
        index = None
        if num_nodes is not None and sum(num_nodes) >= 2:
            index = _real_rows(masks, num_nodes)
        if index is not None:
            return self._gathered(xs, index)
        # the statistics in float32 or wider, as torch's batch norm keeps them: a float16 sum
        # of the rows overflows (2,000 rows near 30), a bfloat16 one keeps 3 digits
        stats = torch.promote_types(xs[0].dtype, torch.float32)
        result = torch.promote_types(xs[0].dtype, self.weight.dtype) if self.affine else xs[0].dtype
        kept = [
            (x if m is None else torch.where(m.unsqueeze(-1), x, 0.0)).to(stats)
            for x, m in zip(xs, masks)
        ]
        mean, var = self._statistics(kept, masks)
        scale = torch.rsqrt(var.to(stats) + self.eps)
        if self.affine:
            scale = scale * self.weight.to(stats)
        shift = -mean.to(stats) * scale + (self.bias.to(stats) if self.affine else 0.0)
        outs = []
        for x, m in zip(kept, masks):
            out = (x * scale + shift).to(result)
            outs.append(out if m is None else torch.where(m.unsqueeze(-1), out, 0.0))
        return outs

    def _gathered(self, xs: list[Tensor], index: list[Tensor | None]) -> list[Tensor]:
        """:meth:`forward_groups` as the fused batch norm of the real rows (``index[k]``: of
        block ``k``, :obj:`None`: all), gathered, then put back in place (padded rows zero).
        One call, forward and backward, on MUTAG-sized per-graph levels ([20, 7, 64]): 158 µs
        against the masked statistics' 420 µs."""
        flats = [x.reshape(-1, x.size(-1)) for x in xs]
        rows = [f if i is None else f.index_select(0, i) for f, i in zip(flats, index)]
        out = super().forward(torch.cat(rows) if len(rows) > 1 else rows[0])
        parts = out.split([r.size(0) for r in rows]) if len(rows) > 1 else [out]
        return [
            (p if i is None else p.new_zeros(f.shape).index_copy(0, i, p)).view_as(x)
            for x, f, i, p in zip(xs, flats, index, parts)
        ]

    def _statistics(self, kept: list[Tensor], masks: list[Tensor | None]):
        """Mean and (biased) variance of the real rows, or the running ones where they are
        used (evaluation; a training step of one row); the running ones updated."""
        if not self.training and self.track_running_stats:
            return self.running_mean, self.running_var
        count = sum(
            x.new_tensor(float(x.numel() // x.size(-1))) if m is None else m.sum().to(x.dtype)
            for x, m in zip(kept, masks)
        )
        rows = count.clamp(min=1)
        mean = sum(x.sum((0, 1)) for x in kept) / rows
        centred = [
            x - mean if m is None else torch.where(m.unsqueeze(-1), x - mean, 0.0)
            for x, m in zip(kept, masks)
        ]
        var = sum(c.pow(2).sum((0, 1)) for c in centred) / rows
        if not self.track_running_stats:
            return mean, var
        enough = count >= 2  # a single row has no batch statistics
        with torch.no_grad():
            self.num_batches_tracked.add_(enough.long())
            if self.momentum is None:  # a cumulative average
                factor = 1.0 / self.num_batches_tracked.clamp(min=1).to(mean.dtype)
            else:
                factor = torch.full((), self.momentum, dtype=mean.dtype, device=mean.device)
            factor = torch.where(enough, factor, 0.0).to(self.running_mean.dtype)
            unbiased = var * rows / (rows - 1).clamp(min=1)
            # through .data, as torch's fused batch norm updates them: its backward (of an
            # earlier forward of this module, before one backward of both) saved the buffers,
            # and an in-place update of their version would fail it
            self.running_mean.data.lerp_(mean.detach().to(self.running_mean.dtype), factor)
            self.running_var.data.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        return (
            torch.where(enough, mean, self.running_mean),
            torch.where(enough, var, self.running_var),
        )
