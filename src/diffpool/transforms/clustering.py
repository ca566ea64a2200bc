r"""Deterministic graph clusterings for DiffPool-Det, cached as a PyG dataset transform.

DiffPool-Det replaces the learned assignment :math:`\mathbf{S}` by the one-hot matrix of a
deterministic graph clustering. Graph :math:`g` gets :math:`k_g = \min(C, \lceil \mathrm{ratio}
\cdot N_g \rceil)` clusters, the budget rule of :class:`~diffpool.DiffPoolConv`; for a second
level the *coarsened* graph (clusters joined when an edge joins their nodes) is clustered again.

**METIS is the default** (``pymetis``, which ships wheels for every platform): it returns at
most exactly the number of parts asked for, balanced and with few cut edges, deterministic for
a fixed seed, in :math:`O(E)` time. Graclus (``torch-cluster``), the algorithm family of the
paper's deterministic baseline, is the other backend: one Graclus pass matches nodes in pairs,
so it reaches a ratio only by repeated passes and cannot hit a given cluster count; and
``torch-cluster`` must be compiled from source on machines without a matching wheel. Register
another backend with :func:`register_clusterer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from diffpool.functional.assignment import cluster_budget
from diffpool.utils.validation import check_ratio

#: ``(edge_index [2, E], num_nodes, num_parts) -> [num_nodes]`` cluster ids in
#: ``[0, num_parts)``. Called with ``1 < num_parts < num_nodes`` and at least one edge.
Clusterer = Callable[[Tensor, int, int], Tensor]

CLUSTERERS: dict[str, Clusterer] = {}

#: the attribute of level ``l``'s cluster ids (``CLUSTER_ATTR.format(l)``) and counts
CLUSTER_ATTR = "det_cluster{}"
NUM_CLUSTERS_ATTR = "det_num_clusters{}"


def register_clusterer(name: str, fn: Clusterer, overwrite: bool = False) -> None:
    """Make a graph clustering available to :class:`ClusterAssignment` by name."""
    if name in CLUSTERERS and not overwrite:
        raise ValueError(f"clusterer {name!r} is already registered (pass overwrite=True)")
    CLUSTERERS[name] = fn


def metis_clusterer(edge_index: Tensor, num_nodes: int, num_parts: int, seed: int = 0) -> Tensor:
    """METIS k-way partition (``pymetis``) of the undirected graph, with a fixed seed."""
    from diffpool.utils.extras import require

    require("det", "DiffPool-Det's METIS clustering")
    import pymetis

    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for i, j in edge_index.t().tolist():
        if i != j:
            neighbours[i].append(j)
            neighbours[j].append(i)
    adjacency = [sorted(set(n)) for n in neighbours]
    options = pymetis.Options()
    options.seed = seed
    result = pymetis.part_graph(num_parts, adjacency=adjacency, options=options)
    return torch.tensor(list(result.vertex_part), dtype=torch.long)


def graclus_clusterer(edge_index: Tensor, num_nodes: int, num_parts: int) -> Tensor:
    """Repeated Graclus matching (``torch-cluster``) until at most ``num_parts`` clusters
    remain or no more pairs can be matched."""
    from diffpool.utils.extras import require

    # torch-cluster compiles from source where no wheel matches the torch build: install
    # torch first, then pip install --no-build-isolation ".[graclus]"
    require("graclus", "the 'graclus' clusterer")
    from torch_cluster import graclus_cluster

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # graclus visits the nodes in a random order
    try:
        labels = torch.arange(num_nodes)
        ei = edge_index
        while int(labels.max()) + 1 > num_parts and ei.numel():
            n = int(labels.max()) + 1
            cluster = graclus_cluster(ei[0], ei[1], num_nodes=n)
            _, cluster = torch.unique(cluster, return_inverse=True)
            if int(cluster.max()) + 1 == n:
                break  # nothing left to match
            labels = cluster[labels]
            ei = cluster[ei]
            ei = ei[:, ei[0] != ei[1]]
        return labels
    finally:
        torch.random.set_rng_state(generator_state)


register_clusterer("metis", metis_clusterer)
register_clusterer("graclus", graclus_clusterer)


def partition(edge_index: Tensor, num_nodes: int, num_parts: int, method: str = "metis") -> Tensor:
    """``[num_nodes]`` cluster ids: every node in exactly one cluster, ids consecutive from 0
    (numbered by first node), at most ``num_parts`` clusters.

    Trivial cases are handled here, not by the backend: one part (all nodes together), at
    least as many parts as nodes (every node alone) and graphs without edges (consecutive
    nodes split into ``num_parts`` near-equal runs).
    """
    if method not in CLUSTERERS:
        raise ValueError(f"unknown clusterer {method!r}; registered: {sorted(CLUSTERERS)}")
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    if num_nodes == 0:
        return torch.zeros(0, dtype=torch.long)
    if num_parts == 1:
        labels = torch.zeros(num_nodes, dtype=torch.long)
    elif num_parts >= num_nodes:
        labels = torch.arange(num_nodes)
    elif edge_index.numel() == 0:
        labels = torch.arange(num_nodes) * num_parts // num_nodes
    else:
        labels = CLUSTERERS[method](edge_index.cpu(), num_nodes, num_parts).long()
        if labels.shape != (num_nodes,) or int(labels.min()) < 0:
            raise ValueError(f"clusterer {method!r} returned invalid cluster ids")
    # Consecutive ids in order of first appearance: empty parts are dropped.
    _, first = torch.unique(labels, return_inverse=True)
    order = torch.full((int(first.max()) + 1,), num_nodes, dtype=torch.long)
    order = order.scatter_reduce(0, first, torch.arange(num_nodes), reduce="amin")
    rank = torch.empty_like(order)
    rank[torch.argsort(order)] = torch.arange(order.numel())
    labels = rank[first]
    if int(labels.max()) + 1 > num_parts:
        raise ValueError(
            f"clusterer {method!r} returned {int(labels.max()) + 1} clusters, more than the "
            f"{num_parts} asked for"
        )
    return labels


def coarsen_edges(edge_index: Tensor, labels: Tensor) -> Tensor:
    """Edges between distinct clusters of ``labels`` (each once per direction)."""
    coarse = labels[edge_index]
    coarse = coarse[:, coarse[0] != coarse[1]]
    return torch.unique(coarse, dim=1) if coarse.numel() else coarse


class ClusterAssignment(BaseTransform):
    r"""Adds hierarchical deterministic cluster assignments to every graph (DiffPool-Det).

    For level :math:`l` it sets ``data.det_cluster{l}``: the cluster id of every node of the
    level's graph (the input graph for :math:`l = 0`, the coarsened graph of level
    :math:`l - 1` after that), and ``data.det_num_clusters{l}`` ``[1]``, the number of
    clusters. Ids are consecutive from 0, so cluster :math:`c` of level :math:`l` is node
    :math:`c` of level :math:`l + 1`. The attribute names hold no ``"index"``: PyG's batching
    concatenates them without offsets, as :class:`~diffpool.models.DiffPoolNet` expects.

    Use it as a ``pre_transform`` (computed once and stored with the processed dataset) or as
    a ``transform``: results are cached in memory per distinct graph, so every graph is
    clustered once per process.

    Args:
        ratio (float, optional): Clusters per node at every level. (default: :obj:`0.25`)
        num_levels (int, optional): Number of pooling levels. (default: :obj:`1`)
        method (str, optional): A registered clusterer, ``"metis"`` or ``"graclus"``.
            (default: :obj:`"metis"`)
        num_clusters (Sequence[int], optional): Cap :math:`C` on the clusters of every
            level (the model's cluster slots). (default: :obj:`None`)
    """

    def __init__(
        self,
        ratio: float = 0.25,
        num_levels: int = 1,
        method: str = "metis",
        num_clusters: Sequence[int] | None = None,
    ):
        self.ratio = check_ratio(ratio)
        if num_levels < 1:
            raise ValueError(f"num_levels must be at least 1, got {num_levels}")
        if method not in CLUSTERERS:
            raise ValueError(f"unknown clusterer {method!r}; registered: {sorted(CLUSTERERS)}")
        if num_clusters is not None and len(num_clusters) != num_levels:
            raise ValueError(
                f"num_clusters has {len(num_clusters)} entries for {num_levels} levels"
            )
        self.num_levels, self.method = num_levels, method
        self.num_clusters = None if num_clusters is None else [int(c) for c in num_clusters]
        self._cache: dict[str, list[Tensor]] = {}
        self.computed = 0  #: graphs clustered so far (not served from the cache)

    def _key(self, edge_index: Tensor, num_nodes: int) -> str:
        digest = hashlib.sha1(edge_index.cpu().contiguous().numpy().tobytes())
        return f"{num_nodes}:{digest.hexdigest()}"

    def _compute(self, edge_index: Tensor, num_nodes: int) -> list[Tensor]:
        levels = []
        for level in range(self.num_levels):
            parts = cluster_budget(num_nodes, self.ratio)
            if self.num_clusters is not None:
                parts = min(parts, self.num_clusters[level])
            labels = partition(edge_index, num_nodes, parts, self.method)
            levels.append(labels)
            edge_index = coarsen_edges(edge_index, labels)
            num_nodes = int(labels.max()) + 1 if labels.numel() else 0
        self.computed += 1
        return levels

    def forward(self, data: Data) -> Data:
        edge_index = data.edge_index.cpu()
        num_nodes = data.num_nodes
        key = self._key(edge_index, num_nodes)
        if key not in self._cache:
            self._cache[key] = self._compute(edge_index, num_nodes)
        for level, labels in enumerate(self._cache[key]):
            data[CLUSTER_ATTR.format(level)] = labels.to(data.edge_index.device)
            count = int(labels.max()) + 1 if labels.numel() else 0
            data[NUM_CLUSTERS_ATTR.format(level)] = torch.tensor([count])
        return data

    def __repr__(self) -> str:
        caps = "" if self.num_clusters is None else f", num_clusters={self.num_clusters}"
        return (
            f"{type(self).__name__}(ratio={self.ratio}, num_levels={self.num_levels}, "
            f"method='{self.method}'{caps})"
        )
