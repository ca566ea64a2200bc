"""What the pooling learned, drawn: the paper's "DiffPool learns reasonable pooling" figure.

:func:`draw_pooling` draws one graph with every node coloured by its hard cluster at the first
pooling level, and beside it the coarsened graph of the next level: one node per used cluster
(at the centre of its members, sized by their number, in the same colour) and edges whose
widths follow :math:`\\mathbf{A}' = \\mathbf{S}^\\top \\mathbf{A} \\mathbf{S}`.
``diffpool-viz`` is the command line around it (with
:func:`~diffpool.training.predict.load_run`, which rebuilds a ``diffpool-train`` run's module and
dataset). Needs the ``viz`` extra
(``pip install ".[viz]"`` in a clone of the repository).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_geometric.data import Batch, Data

from diffpool.utils import files
from diffpool.utils.extras import require

require("viz", "diffpool.viz")


@dataclass
class PoolingPicture:
    """What :func:`draw_pooling` drew."""

    path: Path
    #: hard cluster of every node of the input graph, ``[N]``
    clusters: torch.Tensor
    #: the clusters that hold at least one node, in drawing order
    used: list[int]
    #: the RGB colour (0-1 floats) of every used cluster
    colors: dict[int, tuple[float, float, float]]
    #: ``[C_used, C_used]`` coarsened adjacency between the used clusters
    coarse_adj: torch.Tensor


def cluster_colors(num: int) -> list[tuple[float, float, float]]:
    """``num`` distinct colours: tab10/tab20, then evenly spaced hues."""
    import matplotlib

    if num <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [tuple(cmap(i)[:3]) for i in range(num)]
    if num <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [tuple(cmap(i)[:3]) for i in range(num)]
    cmap = matplotlib.colormaps["hsv"]
    return [tuple(cmap(i / num)[:3]) for i in range(num)]


@torch.no_grad()
def assign(module, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard first-level clusters ``[N]`` and the coarsened adjacency ``[C, C]`` of one graph,
    from a :class:`~diffpool.training.GraphClassifier` (or anything with the same call)."""
    was_training = module.training
    module.eval()
    try:
        out = module(Batch.from_data_list([data]))
    finally:
        module.train(was_training)
    if not out.levels:
        raise ValueError("this model has no pooling level to draw (a flat baseline?)")
    level = out.levels[0]
    s = level.s[0, : data.num_nodes]
    return s.argmax(-1).cpu(), level.adj[0].cpu()


@files.plain_text()  # the title may come from a run's files: no mathtext
def draw_pooling(
    module, data: Data, path: str | Path, title: str | None = None, seed: int = 0
) -> PoolingPicture:
    """Draw one graph's first-level clusters and its coarsened graph into a PNG (written
    whole, never through a symbolic link: :func:`diffpool.utils.files.save_figure`).

    Args:
        module: A trained :class:`~diffpool.training.GraphClassifier`.
        data (Data): One graph, with the dataset's transforms applied.
        path (str): The PNG to write (replaced where it exists; a symbolic link is refused).
        title (str, optional): Figure title. (default: :obj:`None`)
        seed (int, optional): Seed of the spring layout. (default: :obj:`0`)

    Raises:
        ValueError: a model without pooling; ``path`` is a symbolic link
            (:class:`~diffpool.utils.files.UnsafeDestinationError`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    clusters, adj = assign(module, data)
    used = sorted(set(clusters.tolist()))
    palette = cluster_colors(len(used))
    colors = dict(zip(used, palette))

    graph = nx.Graph()
    graph.add_nodes_from(range(data.num_nodes))
    graph.add_edges_from(e for e in data.edge_index.t().tolist() if e[0] != e[1])
    pos = nx.spring_layout(graph, seed=seed)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    nx.draw_networkx_edges(graph, pos, ax=left, width=0.8, edge_color="#999999")
    nx.draw_networkx_nodes(
        graph,
        pos,
        ax=left,
        node_size=120,
        node_color=[colors[c] for c in clusters.tolist()],
        linewidths=0,
    )
    left.set_title(f"input graph: {data.num_nodes} nodes, colour = cluster ({len(used)} used)")

    coarse_adj = adj[used][:, used]
    coarse = nx.Graph()
    coarse.add_nodes_from(range(len(used)))
    weights = coarse_adj.clone()
    weights.fill_diagonal_(0)
    top = float(weights.max()) if weights.numel() else 0.0

    def width(w: float) -> float:  # area-like scaling: thin edges stay visible, none saturate
        return 0.6 + 3.4 * math.sqrt(w / top)

    for i in range(len(used)):
        for j in range(i + 1, len(used)):
            w = float(weights[i, j] + weights[j, i]) / 2
            if top > 0 and w > 0.02 * top:
                coarse.add_edge(i, j, weight=w, width=width(w))
    members = [(clusters == c).nonzero().view(-1).tolist() for c in used]
    centre = {
        i: tuple(sum(pos[n][k] for n in nodes) / len(nodes) for k in range(2))
        for i, nodes in enumerate(members)
    }
    nx.draw_networkx_edges(
        coarse,
        centre,
        ax=right,
        width=[d["width"] for _, _, d in coarse.edges(data=True)],
        edge_color="#555555",
        alpha=0.8,
    )
    nx.draw_networkx_nodes(
        coarse,
        centre,
        ax=right,
        node_size=[150 + 60 * len(m) for m in members],
        node_color=palette,
        linewidths=0,
    )
    # legends: what each colour is (cluster id, members), what the widths mean
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=palette[i],
            markersize=7,
            label=f"cluster {c}: {len(members[i])} nodes",
        )  # fmt: skip
        for i, c in enumerate(used)
    ]
    left.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                frameon=False, title="colour", title_fontsize=8)  # fmt: skip
    if top > 0:
        shown = [top, top / 4, top / 16]
        widths = [
            Line2D([], [], color="#555555", linewidth=width(w), label=f"A' = {w:.3g}")
            for w in shown
        ]
        right.legend(handles=widths, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                     frameon=False, title="edge width", title_fontsize=8)  # fmt: skip
    right.set_title("coarsened graph: edge width = A' = S^T A S")
    for ax in (left, right):
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        files.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return PoolingPicture(path, clusters, used, colors, coarse_adj)
