"""The hierarchical DiffPool graph classifier of the paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.nn.inits import reset
from torch_geometric.nn.models import MLP
from torch_geometric.utils import to_dense_batch

from diffpool.functional._factored import CoarsenedAdjacency
from diffpool.functional._layouts import DenseGroups
from diffpool.functional._plan import dense_groups
from diffpool.functional.assignment import cluster_budget
from diffpool.functional.diff_pool import SparseCall
from diffpool.functional.formulas import batch_link_loss
from diffpool.functional.output import DiffPoolOutput
from diffpool.models.output import ClassifierOutput
from diffpool.models.readout import check_readout, dense_readout, resolve_batch, sparse_readout
from diffpool.nn.dense_diffpool_conv import DenseDiffPoolConv
from diffpool.nn.diffpool_conv import DiffPoolConv
from diffpool.nn.encoders import DenseGNNEncoder
from diffpool.transforms.clustering import CLUSTER_ATTR
from diffpool.utils.validation import check_ratio

BUDGETS = ("fixed", "per_graph")
ASSIGNMENTS = ("learned", "det")
COARSE_ADJ = ("raw", "normalized")


def normalize_coarse_adj(adj: Tensor) -> Tensor:
    r""":math:`\mathbf{D}^{-1/2}\tilde{\mathbf{A}}\mathbf{D}^{-1/2}` of the coarsened
    adjacency without its diagonal (:math:`\tilde{\mathbf{A}}`), as in MinCutPool: the
    diagonal of :math:`\mathbf{S}^\top\mathbf{A}\mathbf{S}` holds each cluster's inner edges
    and, on graphs of dense communities, drowns the edges between clusters."""
    adj = adj * (1 - torch.eye(adj.size(-1), dtype=adj.dtype, device=adj.device))
    deg = adj.sum(-1).clamp(min=torch.finfo(adj.dtype).eps).rsqrt()
    return deg.unsqueeze(-1) * adj * deg.unsqueeze(-2)


def _merge_groups(
    parts: list[DiffPoolOutput], groups: DenseGroups, conv: DenseDiffPoolConv
) -> DiffPoolOutput:
    """One level's per-group outputs as the output of the whole batch, in graph order: the
    tensors zero-padded to the widest group, the losses those of all graphs (the means, or
    with PyG's normalisation its reduction of the per-graph losses: every group is then
    padded as the whole batch)."""
    total = groups.num_graphs
    weights = [len(index) / total for index in groups.index]

    def mean(name: str) -> Tensor:
        return sum(w * getattr(p, name) for w, p in zip(weights, parts))

    def joined(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else groups.reassemble(values)

    link, entropy, aux = mean("link_loss"), mean("entropy_loss"), mean("aux_loss")
    if conv.loss_normalization != "per_graph":
        link = batch_link_loss(joined("link_loss_per_graph"), conv.loss_normalization)
        aux = conv.link_loss_coef * link + conv.entropy_loss_coef * entropy
    return DiffPoolOutput(
        x=joined("x"),
        adj=joined("adj"),
        s=joined("s"),
        mask=joined("mask"),
        cluster_mask=joined("cluster_mask"),
        link_loss=link,
        entropy_loss=entropy,
        aux_loss=aux,
        link_loss_per_graph=joined("link_loss_per_graph"),
        entropy_loss_per_graph=joined("entropy_loss_per_graph"),
        z=joined("z"),
    )


def level_clusters(
    ratio: float, num_levels: int, max_num_nodes: int | None, num_clusters=None
) -> list[int]:
    r"""Cluster slots :math:`C_l` of every level: the given ``num_clusters`` (an int is the
    first level's, the next ones follow by the ratio), or
    :math:`C_1 = \lceil \mathrm{ratio} \cdot N_{\max} \rceil` and
    :math:`C_{l+1} = \lceil \mathrm{ratio} \cdot C_l \rceil`."""
    if num_clusters is None:
        if max_num_nodes is None or int(max_num_nodes) < 1:
            raise ValueError(
                "give max_num_nodes (the largest graph of the dataset, the reference of the "
                f"fixed cluster count) or num_clusters; got max_num_nodes={max_num_nodes!r}"
            )
        num_clusters = cluster_budget(int(max_num_nodes), ratio)
    if isinstance(num_clusters, int):
        clusters = [num_clusters]
        while len(clusters) < num_levels:
            clusters.append(cluster_budget(clusters[-1], ratio))
    else:
        clusters = [int(c) for c in num_clusters]
    if len(clusters) != num_levels:
        raise ValueError(f"num_clusters has {len(clusters)} entries for {num_levels} levels")
    if any(c < 1 for c in clusters):
        raise ValueError(f"every level needs at least one cluster, got {clusters}")
    return clusters


class DiffPoolNet(torch.nn.Module):
    r"""The hierarchical DiffPool graph classifier (Ying et al., NeurIPS 2018).

    A sparse encoder and :class:`~diffpool.DiffPoolConv` pool the input graphs; every further
    level runs a :class:`~diffpool.DenseDiffPoolConv` on the dense coarsened batch, and a
    final dense encoder embeds the last coarsened graph. With :math:`L` pooling levels:

    .. math::
        \mathbf{Z}^{(l)} = \mathrm{GNN}^{(l)}_{\mathrm{embed}}(\mathbf{A}^{(l)},
        \mathbf{X}^{(l)}), \quad
        \mathbf{S}^{(l)} = \mathrm{softmax}(\mathrm{GNN}^{(l)}_{\mathrm{pool}}(
        \mathbf{A}^{(l)}, \mathbf{X}^{(l)})), \quad
        \mathbf{X}^{(l+1)} = \mathbf{S}^{(l)\top}\mathbf{Z}^{(l)}, \quad
        \mathbf{A}^{(l+1)} = \mathbf{S}^{(l)\top}\mathbf{A}^{(l)}\mathbf{S}^{(l)}

    for :math:`l = 0, \dots, L - 1`, then :math:`\mathbf{Z}^{(L)}` from the final encoder. The
    graph embedding concatenates a readout (max, mean or sum over the real nodes) of every
    :math:`\mathbf{Z}^{(l)}`, :math:`l = 0, \dots, L`, and an MLP maps it to class logits (the
    authors' code). ``aux_loss`` is the sum over levels of each level's weighted link and
    entropy losses.

    **Cluster budgets.** Level :math:`l` has :math:`C_l` cluster slots,
    :math:`C_1 = \lceil \mathrm{ratio} \cdot N_{\mathrm{ref}} \rceil` with the reference
    :math:`N_{\mathrm{ref}}` = ``max_num_nodes`` (the dataset's largest graph; the authors'
    code takes its node cap ``--max-nodes`` instead, 1000 by default, and drops larger graphs,
    so :math:`C_1 = 100` at ratio 0.1 on every dataset) unless ``num_clusters`` is given, and
    :math:`C_{l+1} = \lceil \mathrm{ratio} \cdot C_l \rceil`. With ``budget="fixed"`` every
    graph uses all :math:`C_l` clusters; with ``budget="per_graph"`` graph :math:`g` uses
    :math:`\min(C_l, \lceil \mathrm{ratio} \cdot n_g \rceil)`, :math:`n_g` its number of
    nodes at that level (see :class:`~diffpool.DiffPoolConv`).

    **Losses.** Every level's losses are per graph, padding never counted
    (``loss_normalization="per_graph"``), or normalised as
    :func:`torch_geometric.nn.dense_diff_pool` normalises them (``"pyg"``, or
    ``"pyg_unnormalized"`` for its ``normalize=False``), so that a PyG DiffPool model's
    coefficients carry over: the first level's batch padded to its largest graph, the dense
    levels to their cluster slots (:math:`C_l`; with ``budget="per_graph"`` the batch's
    widest budget at that level, :math:`\min(C_l, \lceil \mathrm{ratio} \cdot
    \max_g n_g \rceil)`) (see :class:`~diffpool.DiffPoolConv`). The dense levels
    then run as one padded batch (:attr:`group_dense_levels` applies to the per-graph form
    only).

    **Variants.** ``link_loss="none"`` is DiffPool-NoLP; ``assignment="det"`` is DiffPool-Det:
    every level's :math:`\mathbf{S}` is the one-hot matrix of a deterministic clustering,
    which :class:`~diffpool.transforms.ClusterAssignment` adds to the dataset and which the
    forward pass takes as ``clusters``; there is no pooling GNN.

    **Edge features.** With ``edge_dim`` and an encoder type that takes edge features
    (``"gine"``, ``"gat"``), the first level's GNNs get ``edge_attr``. The coarsened levels
    have none: :math:`\mathbf{A}' = \mathbf{S}^\top\mathbf{A}\mathbf{S}` pools the
    connectivity only.

    Args:
        in_channels (int): Size of each input node feature.
        num_classes (int): The output size (classes; labels or target values for other
            tasks).
        max_num_nodes (int, optional): :math:`N_{\mathrm{ref}}`, the largest graph of the
            dataset. (default: :obj:`None`)
        num_clusters (int or Sequence[int], optional): :math:`C_1` (or every :math:`C_l`)
            instead of the ratio rule. (default: :obj:`None`)
        hidden_channels (int, optional): Width of every GNN layer. (default: :obj:`64`)
        encoder (str, optional): A registered encoder type: ``"sage"`` (the paper),
            ``"gcn"``, ``"gin"``, ``"gat"``, ``"sum"`` (the authors' code) or your own.
            (default: :obj:`"sage"`)
        num_layers (int, optional): GNN layers per encoder block. (default: :obj:`3`)
        num_levels (int, optional): Number of pooling levels :math:`L`. (default: :obj:`1`)
        ratio (float, optional): Clusters per node. (default: :obj:`0.25`)
        budget (str, optional): ``"fixed"`` or ``"per_graph"``. (default: :obj:`"fixed"`)
        assignment (str, optional): ``"learned"`` or ``"det"``. (default: :obj:`"learned"`)
        readout (str, optional): ``"max"`` (the authors' code), ``"mean"`` or ``"sum"``.
            (default: :obj:`"max"`)
        link_loss (str, optional): ``"frobenius"``, ``"bce"`` or ``"none"``.
            (default: :obj:`"frobenius"`)
        link_loss_coef (float, optional): (default: :obj:`1.0`)
        entropy_loss (bool, optional): (default: :obj:`True`)
        entropy_loss_coef (float, optional): (default: :obj:`1.0`)
        loss_normalization (str, optional): ``"per_graph"``, ``"pyg"`` or
            ``"pyg_unnormalized"`` (see above). (default: :obj:`"per_graph"`)
        dropout (float, optional): Dropout in the encoders and the MLP. (default: :obj:`0.0`)
        norm (str, optional): ``"batch"`` (over real nodes only) or :obj:`None`.
            (default: :obj:`"batch"`)
        concat (bool, optional): Encoder blocks output the concatenation of their layers.
            (default: :obj:`True`)
        normalize (bool, optional): L2-normalise every GNN layer's output.
            (default: :obj:`False`)
        mlp_hidden_channels (int, optional): Hidden width of the classifier MLP; ``0`` for a
            linear classifier. (default: :obj:`50`)
        coarse_adj (str, optional): What the encoder after each pooling level runs on:
            ``"raw"`` (:math:`\mathbf{S}^\top\mathbf{A}\mathbf{S}`, the paper) or
            ``"normalized"`` (:func:`normalize_coarse_adj`). (default: :obj:`"raw"`)
        validate (bool, optional): Input checks in the pooling layers. (default: :obj:`True`)
        edge_dim (int, optional): Edge feature width (see above). (default: :obj:`None`)
        pool_net (str, optional): What computes every level's assignment: ``"gnn"``, a pooling
            GNN on the level's input graph (the paper), or ``"mlp"``,
            :math:`\mathbf{S}^{(l)} = \mathrm{softmax}(\mathbf{Z}^{(l)}\mathbf{W}^{(l)\top} +
            \mathbf{b}^{(l)})` on the level's embeddings, with no pooling GNN (the architecture
            of torch-geometric-pool's DiffPool and many later papers: about half the GNN work
            of a level). (default: :obj:`"gnn"`)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        max_num_nodes: int | None = None,
        *,
        edge_dim: int | None = None,
        num_clusters: int | Sequence[int] | None = None,
        hidden_channels: int = 64,
        encoder: str = "sage",
        num_layers: int = 3,
        num_levels: int = 1,
        ratio: float = 0.25,
        budget: str = "fixed",
        assignment: str = "learned",
        readout: str = "max",
        link_loss: str = "frobenius",
        link_loss_coef: float = 1.0,
        entropy_loss: bool = True,
        entropy_loss_coef: float = 1.0,
        loss_normalization: str = "per_graph",
        dropout: float = 0.0,
        norm: str | None = "batch",
        concat: bool = True,
        normalize: bool = False,
        mlp_hidden_channels: int = 50,
        coarse_adj: str = "raw",
        validate: bool = True,
        pool_net: str = "gnn",
    ):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"need in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}"
            )
        if num_levels < 1:
            raise ValueError(f"num_levels must be at least 1, got {num_levels}")
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
        if coarse_adj not in COARSE_ADJ:
            raise ValueError(f"coarse_adj must be one of {COARSE_ADJ}, got {coarse_adj!r}")
        self.coarse_adj = coarse_adj
        self.ratio = check_ratio(ratio)
        self.readout = check_readout(readout)
        self.budget, self.assignment, self.pool_net = budget, assignment, pool_net
        self.num_levels = num_levels
        self.num_clusters = level_clusters(self.ratio, num_levels, max_num_nodes, num_clusters)
        self._given_clusters = num_clusters
        #: the dataset's largest graph: under ``torch.compile`` the first level pads every
        #: batch to it (static shapes; with PyG's loss normalisation, whose losses depend on the
        #: padding, it pads to the batch's largest graph, as in eager: a graph break)
        self.max_num_nodes = max_num_nodes
        self.in_channels, self.num_classes, self.edge_dim = in_channels, num_classes, edge_dim

        block = dict(
            num_layers=num_layers, dropout=dropout, norm=norm, concat=concat, normalize=normalize
        )
        layer = dict(
            ratio=self.ratio if budget == "per_graph" else None,
            link_loss=link_loss,
            link_loss_coef=link_loss_coef,
            entropy_loss=entropy_loss,
            entropy_loss_coef=entropy_loss_coef,
            loss_normalization=loss_normalization,
            validate=validate,
        )
        self.levels = torch.nn.ModuleList()
        channels, readout_channels = in_channels, 0
        for level, clusters in enumerate(self.num_clusters):
            conv = DiffPoolConv if level == 0 else DenseDiffPoolConv
            self.levels.append(
                conv.from_encoder(
                    encoder,
                    channels,
                    hidden_channels,
                    clusters,
                    pool=assignment == "learned",
                    pool_net=pool_net,
                    **({"edge_dim": edge_dim} if level == 0 and edge_dim is not None else {}),
                    **block,
                    **layer,
                )
            )
            channels = self.levels[-1].embed.out_channels
            readout_channels += channels
        self.final = DenseGNNEncoder(encoder, channels, hidden_channels, hidden_channels, **block)
        readout_channels += self.final.out_channels
        sizes = (
            [readout_channels, mlp_hidden_channels] if mlp_hidden_channels else [readout_channels]
        )
        self.mlp = MLP([*sizes, num_classes], norm=None, dropout=dropout)

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        for level in self.levels:
            level.reset_parameters()
        reset(self.final)
        self.mlp.reset_parameters()

    @staticmethod
    def required_transform(
        *,
        assignment: str = "learned",
        ratio: float = 0.25,
        num_levels: int = 1,
        num_clusters: int | Sequence[int] | None = None,
        **_: object,
    ):
        """The dataset transform a model of these settings needs, known before any data is
        loaded: for ``assignment="det"``, the :class:`~diffpool.transforms.ClusterAssignment`
        of its ratio and levels (capped by ``num_clusters`` where given; the ratio rule's
        caps never bind); otherwise :obj:`None`."""
        if assignment != "det":
            return None
        from diffpool.transforms import ClusterAssignment

        caps = None
        if num_clusters is not None:
            caps = level_clusters(ratio, num_levels, None, num_clusters)
        return ClusterAssignment(ratio, num_levels, num_clusters=caps)

    def data_transform(self):
        """The dataset transform this model needs (see :meth:`required_transform`)."""
        return self.required_transform(
            assignment=self.assignment,
            ratio=self.ratio,
            num_levels=self.num_levels,
            num_clusters=self._given_clusters,
        )

    def _next_adj(self, adj: Tensor) -> Tensor:
        return normalize_coarse_adj(adj) if self.coarse_adj == "normalized" else adj

    def _node_mask(self, mask: Tensor) -> Tensor | None:
        """The next dense level's node mask (its ``cluster_mask``): :obj:`None` where every
        cluster slot is used by construction (learned assignments with fixed budgets), which
        skips the masking."""
        return None if self.assignment == "learned" and self.budget == "fixed" else mask

    def _dense_clusters(self, flat: Tensor, cluster_mask: Tensor, level: int) -> Tensor:
        """Flat per-coarse-node cluster ids ``[sum_g k_g]`` -> ``[B, slots]``."""
        counts = cluster_mask.sum(-1)
        if int(counts.sum()) != flat.numel():
            raise ValueError(
                f"clusters[{level}] holds {flat.numel()} ids but level {level} has "
                f"{int(counts.sum())} nodes: build ClusterAssignment with the model's ratio "
                "and num_levels"
            )
        batch = torch.repeat_interleave(torch.arange(counts.numel(), device=flat.device), counts)
        return to_dense_batch(
            flat, batch, batch_size=counts.numel(), max_num_nodes=cluster_mask.size(-1)
        )[0]

    def forward(
        self,
        x: Tensor,
        edge_index,
        batch: Tensor | None = None,
        edge_weight: Tensor | None = None,
        *,
        batch_size: int | None = None,
        clusters: Sequence[Tensor] | None = None,
        return_assignments: bool = True,
        edge_attr: Tensor | None = None,
        return_levels: bool = True,
    ) -> ClassifierOutput:
        r"""Classify a sparse mini-batch of graphs.

        Args:
            x (torch.Tensor): ``[N, F]`` node features.
            edge_index (torch.Tensor or SparseTensor): connectivity, as for
                :class:`~diffpool.DiffPoolConv`.
            batch (torch.Tensor, optional): ``[N]`` graph index of every node.
            edge_weight (torch.Tensor, optional): ``[E]`` edge weights.
            batch_size (int, optional): number of graphs :math:`B`.
            clusters (Sequence[torch.Tensor], optional): for ``assignment="det"``, the
                ``det_cluster{l}`` attributes of the batch (see
                :class:`~diffpool.transforms.ClusterAssignment`), one per level.
            return_assignments (bool, optional): If set to :obj:`False`, every level's ``s``
                is :obj:`None` and the first level never builds its dense ``[B, N_max, C]``
                assignment (to save memory). (default: :obj:`True`)
            edge_attr (torch.Tensor, optional): ``[E, edge_dim]`` edge features, for a
                model built with ``edge_dim``. (default: :obj:`None`)
            return_levels (bool, optional): If set to :obj:`False`, ``levels`` is empty
                (what :class:`~diffpool.training.GraphClassifier` does in its steps, which
                read only the logits and the losses): with fixed budgets the model may then
                keep the first level's coarsened adjacency of small graphs as its factors
                (see :attr:`factor_coarse_adj`). (default: :obj:`True`)

        Returns:
            ClassifierOutput: ``logits`` ``[B, num_classes]``, the summed ``aux_loss``, the
            per-level ``link_loss`` and ``entropy_loss`` ``[L]`` and every level's output.
        """
        if self.assignment == "det":
            if clusters is None or len(clusters) < self.num_levels:
                raise ValueError(
                    f"assignment='det' needs clusters for all {self.num_levels} levels: add "
                    "diffpool.transforms.ClusterAssignment to the dataset and pass "
                    "clusters=[batch.det_cluster0, ...]"
                )
        batch, batch_size = resolve_batch(x, batch, batch_size)
        fixed = None if self.assignment == "learned" else clusters[0]
        # under torch.compile the first level pads every batch to the dataset's largest graph
        # (static shapes); not with PyG's loss normalisation, whose losses depend on the padding
        static = torch.compiler.is_compiling() and self.levels[0].loss_normalization == "per_graph"
        run = SparseCall(
            batch_size,
            self.max_num_nodes if static else None,
            return_assignment=return_assignments,
            factored=self._factored_adj(return_levels),
        )
        edge_attr = edge_attr if self.edge_dim is not None else None
        # the inputs are checked once, at the first level; the dense levels get the model's
        # own tensors
        out, counts = self.levels[0]._pool(x, edge_index, batch, edge_weight, edge_attr, fixed, run)
        outputs = [out]
        readouts = [sparse_readout(self.readout, out.z, batch, batch_size)]
        budgets = self._dense_budgets(counts)
        groups = self._dense_groups(out, budgets)
        if groups is not None:
            result = self._forward_groups(
                out, groups, budgets, outputs, readouts, return_assignments
            )
            return result if return_levels else result._replace(levels=())
        for level, conv in enumerate(self.levels[1:], start=1):
            fixed = None
            if self.assignment == "det":
                fixed = self._dense_clusters(clusters[level], out.cluster_mask, level)
            out = conv._pool(
                out.x,
                self._next_adj(out.adj),
                self._node_mask(out.cluster_mask),
                fixed,
                return_assignments,
                validate=self.assignment == "det",  # the given clusters are input
                num_nodes=None if budgets is None else sum(budgets[level - 1]),
            )
            outputs.append(out)
            readouts.append(dense_readout(self.readout, out.z, out.mask))
        z = self.final(
            out.x,
            self._next_adj(out.adj),
            self._node_mask(out.cluster_mask),
            num_nodes=None if budgets is None else sum(budgets[-1]),
        )
        readouts.append(dense_readout(self.readout, z, out.cluster_mask))
        result = self._output(readouts, outputs)
        return result if return_levels else result._replace(levels=())

    def _output(self, readouts: list[Tensor], outputs: list[DiffPoolOutput]) -> ClassifierOutput:
        """The logits of the concatenated readouts, and every level's losses and output."""
        return ClassifierOutput(
            logits=self.mlp(torch.cat(readouts, dim=-1)),
            aux_loss=torch.stack([o.aux_loss for o in outputs]).sum(),
            link_loss=torch.stack([o.link_loss for o in outputs]),
            entropy_loss=torch.stack([o.entropy_loss for o in outputs]),
            levels=tuple(outputs),
        )

    #: With per-graph budgets, run the levels after the first group by group (graphs of
    #: similar size together, each group padded to its own largest graph) where the batch's
    #: sizes differ enough to gain from it: a batch with one large graph (D&D) no longer pads
    #: every graph's dense level to it. The same result up to float rounding (and other
    #: dropout masks); ``False``: one padded batch (always with PyG's loss normalisation,
    #: whose losses depend on the padding).
    group_dense_levels: bool = True

    #: With fixed budgets, keep the first level's coarsened adjacency
    #: :math:`\mathbf{S}_g^\top\mathbf{A}_g\mathbf{S}_g` of graphs much smaller than
    #: :math:`C_1` as its factors in the steps that return no assignments (training): the
    #: dense levels multiply through the factors, the same result up to float rounding
    #: (see docs/scaling.md). Only in calls with ``return_levels=False``, whose output holds
    #: no level (no factored form ever leaves the model). ``False``: always the dense tensor.
    factor_coarse_adj: bool = True

    def _factored_adj(self, return_levels: bool) -> bool:
        return (
            self.factor_coarse_adj
            and not return_levels
            and self.budget == "fixed"
            and self.assignment == "learned"
            and self.coarse_adj == "raw"
            and not torch.compiler.is_compiling()
        )

    def _dense_budgets(self, counts: list[int] | None) -> list[list[int]] | None:
        """Every graph's nodes at the input of each dense level and of the final encoder
        (``[num_levels][B]``: the cluster budgets, level by level), on the host from the input
        graphs' node ``counts`` without reading the device again; :obj:`None` where the
        levels are not masked by budgets (fixed budgets, DiffPool-Det) or the counts are not
        read (``torch.compile``)."""
        if self.budget != "per_graph" or self.assignment != "learned" or counts is None:
            return None
        budgets, nodes = [], counts
        for slots in self.num_clusters:
            nodes = [min(slots, cluster_budget(n, self.ratio)) for n in nodes]
            budgets.append(nodes)
        return budgets

    def _dense_groups(self, out, budgets: list[list[int]] | None) -> DenseGroups | None:
        """The size groups of the dense levels, or :obj:`None` to run them as one batch
        (``budgets``: :meth:`_dense_budgets`)."""
        if isinstance(out.adj, CoarsenedAdjacency):  # grouped by the first level already
            heads = [out.adj.num_clusters] * len(out.adj.index)
            return DenseGroups(out.adj.index, heads, out.x.device)
        if not self.group_dense_levels or budgets is None:
            return None
        if self.levels[0].loss_normalization != "per_graph":  # PyG's losses see the padding
            return None
        first = budgets[0]
        buckets = dense_groups(first, self.final.in_channels)
        if buckets is None:
            return None
        return DenseGroups(buckets, [first[g[0]] for g in buckets], out.x.device)

    def _forward_groups(self, out, groups, budgets, outputs, readouts, return_assignments):
        """The dense levels and the final encoder group by group (see
        :attr:`group_dense_levels`); outputs back in graph order."""

        def group_nodes(level: int) -> list[int] | None:  # each group's real nodes
            if budgets is None:
                return None
            return [sum(budgets[level][g] for g in graphs) for graphs in groups.buckets]

        xs, masks = groups.split(out.x), groups.split(out.cluster_mask)
        if isinstance(out.adj, CoarsenedAdjacency):
            adjs = list(out.adj.parts)
        else:
            adjs = groups.split(self._next_adj(out.adj), node_dims=2)
        for level, conv in enumerate(self.levels[1:]):
            parts = conv.forward_groups(
                xs,
                adjs,
                [self._node_mask(m) for m in masks],
                return_assignment=return_assignments,
                validate=False,  # the model's own tensors
                num_nodes=group_nodes(level),
            )
            outputs.append(_merge_groups(parts, groups, conv))
            readouts.append(
                groups.reassemble([dense_readout(self.readout, p.z, p.mask) for p in parts])
            )
            xs, masks = [p.x for p in parts], [p.cluster_mask for p in parts]
            adjs = [self._next_adj(p.adj) for p in parts]
        zs = self.final.forward_groups(
            xs, adjs, [self._node_mask(m) for m in masks], num_nodes=group_nodes(-1)
        )
        readouts.append(
            groups.reassemble([dense_readout(self.readout, z, m) for z, m in zip(zs, masks)])
        )
        return self._output(readouts, outputs)

    def forward_batch(
        self, data, return_assignments: bool = True, return_levels: bool = True
    ) -> ClassifierOutput:
        """:meth:`forward` on a PyG mini-batch, with DiffPool-Det's clusters read from it
        (the attributes :class:`~diffpool.transforms.ClusterAssignment` adds)."""
        clusters = None
        if self.assignment == "det":
            missing = [
                CLUSTER_ATTR.format(level)
                for level in range(self.num_levels)
                if CLUSTER_ATTR.format(level) not in data
            ]
            if missing:
                raise ValueError(
                    f"assignment='det' needs {missing} in the batch: add "
                    f"{self.data_transform()!r} to the dataset's transforms"
                )
            clusters = [data[CLUSTER_ATTR.format(level)] for level in range(self.num_levels)]
        return self(
            data.x,
            data.edge_index,
            data.batch,
            data.get("edge_weight"),
            batch_size=data.num_graphs,
            clusters=clusters,
            return_assignments=return_assignments,
            edge_attr=data.get("edge_attr") if self.edge_dim is not None else None,
            return_levels=return_levels,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.num_classes}, "
            f"encoder='{self.levels[0].embed.encoder}', num_levels={self.num_levels}, "
            f"num_clusters={self.num_clusters}, budget='{self.budget}', "
            f"assignment='{self.assignment}', "
            + (f"pool_net='{self.pool_net}', " if self.pool_net != "gnn" else "")
            + f"readout='{self.readout}')"
        )
