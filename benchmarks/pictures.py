"""What the pooling learned, as pictures (``diffpool.viz.draw_pooling``).

* ``pooling_synthetic.png``: DiffPool trained on the synthetic community task (the recipe of
  the learning test in ``tests/test_models.py``), one test graph of each class: every node
  coloured by its hard first-level cluster, and the coarsened graph.
* ``pooling_enzymes.png`` (with ``--enzymes-run DIR``): the same for a ``diffpool-train`` run
  directory, e.g. a fold of the accuracy benchmark.

    python benchmarks/pictures.py [--enzymes-run DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from diffpool.datasets import hierarchical_communities
from diffpool.training import GraphClassifier
from diffpool.training.predict import load_run
from diffpool.viz import draw_pooling

#: where the pictures go by default (untracked; the committed ones: --out benchmarks/results)
OUT = Path(__file__).resolve().parent / "out"


def synthetic(out: Path, epochs: int = 20) -> None:
    graphs = hierarchical_communities(2000, seed=0)
    train, test = graphs[:1600], graphs[1600:]
    torch.manual_seed(0)
    spec = dict(
        _target_="diffpool.models.build_model",
        variant="diffpool",
        num_clusters=7,
        hidden_channels=32,
        readout="mean",
        coarse_adj="normalized",
        entropy_loss_coef=0.1,
        dropout=0.3,
    )
    module = GraphClassifier(spec, graphs[0].num_features, 2)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.002)
    module.train()
    for _ in range(epochs):
        for batch in DataLoader(train, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            result = module(batch)
            loss = torch.nn.functional.cross_entropy(result.logits, batch.y) + result.aux_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 2.0)
            optimizer.step()
    for label, name in enumerate(("hubs_adjacent", "hubs_apart")):
        graph = next(g for g in test if int(g.y) == label)
        picture = draw_pooling(
            module,
            graph,
            out.with_name(f"{out.stem}_{name}.png"),
            title=f"synthetic communities, class {name}: 7 communities, 7 cluster slots",
        )
        agree = _purity(picture.clusters, graph.community)
        print(f"{name}: {len(picture.used)} clusters used, purity vs communities {agree:.2f}")


def _purity(clusters: torch.Tensor, communities: torch.Tensor) -> float:
    """Share of nodes in their cluster's majority community."""
    hits = 0
    for c in clusters.unique():
        members = communities[clusters == c]
        hits += int(torch.bincount(members).max())
    return hits / clusters.numel()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--enzymes-run", default=None, help="a diffpool-train run directory")
    p.add_argument("--graph", type=int, default=6)
    p.add_argument("--out", default=str(OUT), help="folder (default: benchmarks/out/)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch's intra-op threads (small graphs: 1)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic(out / "pooling_synthetic.png")
    if args.enzymes_run:
        module, datamodule = load_run(args.enzymes_run)
        data = datamodule.dataset[args.graph]
        picture = draw_pooling(
            module,
            data,
            out / "pooling_enzymes.png",
            title=f"ENZYMES graph {args.graph} (class {int(data.y)})",
        )
        print(f"ENZYMES graph {args.graph}: {len(picture.used)} clusters used")


if __name__ == "__main__":
    main()
