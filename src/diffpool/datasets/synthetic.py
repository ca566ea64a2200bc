r"""A synthetic graph classification task whose label lives in the community structure.

Every graph is built from ``num_communities`` dense communities (Erdős–Rényi blocks with edge
probability ``p_in``). The communities are joined by single *bridge* edges along a *community
graph* whose shape is the class: by default two trees of 7 communities with the same degree
sequence, whose two hub communities are adjacent or not (any subset of :data:`TOPOLOGIES`:
also ``path``, ``cycle``, ``star``, ``tree``). Community sizes are drawn per community,
bridges attach to random nodes, and node features are one-hot degrees plus a colour per
community, so the class is a property of the graph of communities, a level above the nodes:
what a hierarchical pooling should recover by pooling each community into one cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

TOPOLOGIES = ("hubs_adjacent", "hubs_apart", "path", "cycle", "star", "tree")

# Two trees of 7 communities with the same degree sequence (3, 3, 2, 1, 1, 1, 1): the two
# hubs (0 and 1) are adjacent in one and two bridges apart in the other. Every community sees
# the same number of bridges in both, so no view of a node's neighbourhood that stays inside
# its community and the next tells them apart; the graph of communities does (one round of
# message passing on it: a hub's neighbours are a hub and two leaves, or a middle community
# and two leaves).
_HUBS = {
    "hubs_adjacent": [(0, 1), (0, 3), (0, 4), (1, 2), (2, 5), (1, 6)],
    "hubs_apart": [(0, 2), (2, 1), (0, 3), (0, 4), (1, 5), (1, 6)],
}


def community_graph(topology: str, k: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """Edges of the graph of ``k`` communities of a topology (the ``hubs_*`` ones need
    ``k = 7``)."""
    if topology in _HUBS:
        if k != 7:
            raise ValueError(f"topology {topology!r} has 7 communities, got num_communities={k}")
        return list(_HUBS[topology])
    if topology == "path":
        return [(i, i + 1) for i in range(k - 1)]
    if topology == "cycle":
        return [(i, (i + 1) % k) for i in range(k)]
    if topology == "star":
        return [(0, i) for i in range(1, k)]
    if topology == "tree":  # a random tree with a node of degree 3
        edges = [(0, 1), (0, 2), (0, 3)]
        for i in range(4, k):
            edges.append((int(torch.randint(1, i, (1,), generator=generator)), i))
        return edges
    raise ValueError(f"unknown topology {topology!r}; known: {TOPOLOGIES}")


def hierarchical_communities(
    num_graphs: int = 600,
    topologies: Sequence[str] = ("hubs_adjacent", "hubs_apart"),
    num_communities: int = 7,
    community_size: tuple[int, int] = (6, 10),
    p_in: float = 0.7,
    max_degree: int = 12,
    colors: bool = True,
    seed: int = 0,
) -> list[Data]:
    r"""Generate the dataset as a list of :class:`~torch_geometric.data.Data`.

    Args:
        num_graphs (int, optional): Number of graphs, classes in turn (balanced).
            (default: :obj:`600`)
        topologies (Sequence[str], optional): The classes: community-graph shapes from
            :data:`TOPOLOGIES`. (default: :obj:`("hubs_adjacent", "hubs_apart")`)
        num_communities (int, optional): Communities per graph (at least 4; 7 for the
            ``hubs_*`` topologies). (default: :obj:`7`)
        community_size (tuple[int, int], optional): Inclusive range of nodes per community.
            (default: :obj:`(6, 10)`)
        p_in (float, optional): Edge probability inside a community. (default: :obj:`0.7`)
        max_degree (int, optional): Degrees above this share the last one-hot feature.
            (default: :obj:`12`)
        colors (bool, optional): Add a one-hot colour per community (a random permutation of
            ``num_communities`` colours) to the features. Nodes of look-alike communities
            otherwise get the same embedding, so that no GNN-computed assignment can put
            them in different clusters. (default: :obj:`True`)
        seed (int, optional): Seed of the generator: same seed, same dataset.
            (default: :obj:`0`)

    Returns:
        list[Data]: graphs with ``x`` ``[N, max_degree + 1 (+ num_communities)]`` (one-hot
        degree and colour),
        ``edge_index`` (undirected), ``y`` ``[1]`` (index into ``topologies``) and
        ``community`` ``[N]`` (the community of every node: the ground-truth clustering).
    """
    if num_communities < 4:
        raise ValueError(f"num_communities must be at least 4, got {num_communities}")
    lo, hi = community_size
    if not 2 <= lo <= hi:
        raise ValueError(
            f"community_size must be a range (lo, hi) with 2 <= lo <= hi, got {community_size}"
        )
    if not 0.0 < p_in <= 1.0:
        raise ValueError(f"p_in must lie in (0, 1], got {p_in}")
    for t in topologies:
        if t not in TOPOLOGIES:
            raise ValueError(f"unknown topology {t!r}; known: {TOPOLOGIES}")
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for index in range(num_graphs):
        label = index % len(topologies)
        sizes = torch.randint(lo, hi + 1, (num_communities,), generator=gen).tolist()
        offsets = [sum(sizes[:i]) for i in range(num_communities)]
        edges = []
        for size, offset in zip(sizes, offsets):
            # A random spanning path keeps every community connected; then ER edges.
            perm = torch.randperm(size, generator=gen) + offset
            edges += list(zip(perm[:-1].tolist(), perm[1:].tolist()))
            pairs = torch.triu_indices(size, size, 1) + offset
            keep = torch.rand(pairs.size(1), generator=gen) < p_in
            edges += pairs[:, keep].t().tolist()
        for a, b in community_graph(topologies[label], num_communities, gen):
            u = offsets[a] + int(torch.randint(sizes[a], (1,), generator=gen))
            v = offsets[b] + int(torch.randint(sizes[b], (1,), generator=gen))
            edges.append((u, v))
        num_nodes = sum(sizes)
        edge_index = to_undirected(torch.tensor(edges).t(), num_nodes=num_nodes)
        degree = torch.bincount(edge_index[0], minlength=num_nodes).clamp(max=max_degree)
        x = torch.nn.functional.one_hot(degree, max_degree + 1).float()
        community = torch.repeat_interleave(torch.arange(num_communities), torch.tensor(sizes))
        if colors:
            # Every community a different colour, in random order: the colour tells
            # communities apart (which a GNN cannot do from their look-alike structure) but
            # says nothing about their place in the graph of communities.
            colour = torch.randperm(num_communities, generator=gen)[community]
            x = torch.cat([x, torch.nn.functional.one_hot(colour, num_communities).float()], -1)
        graphs.append(
            Data(x=x, edge_index=edge_index, y=torch.tensor([label]), community=community)
        )
    return graphs
