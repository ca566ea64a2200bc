"""Two DiffPool levels with the model class, on a synthetic task that needs the hierarchy.

In ``hierarchical_communities`` a graph is a tree of 7 communities, and its class is whether
the two hub communities are adjacent: both classes have the same degree sequence, so a flat
model stays at chance. ``DiffPoolNet`` with one cluster per community learns it.

    python examples/two_levels.py --epochs 20
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from diffpool.datasets import hierarchical_communities
from diffpool.models import build_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--graphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    graphs = hierarchical_communities(args.graphs, seed=args.seed)
    split = len(graphs) * 4 // 5
    train, test = graphs[:split], graphs[split:]
    max_nodes = max(g.num_nodes for g in graphs)
    model = build_model(
        "diffpool",
        graphs[0].num_features,
        2,
        max_nodes,
        num_levels=2,
        num_clusters=[7, 2],  # one cluster per community, then two
        budget="fixed",
        readout="mean",
        coarse_adj="normalized",
        entropy_loss_coef=0.1,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch in DataLoader(train, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            # a training step reads only the logits and losses: no assignments, no levels
            out = model(
                batch.x, batch.edge_index, batch.batch,
                return_assignments=False, return_levels=False,
            )  # fmt: skip
            loss = F.cross_entropy(out.logits, batch.y) + out.aux_loss
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for batch in DataLoader(test, batch_size=200):
                logits = model(batch.x, batch.edge_index, batch.batch).logits
                correct += int((logits.argmax(-1) == batch.y).sum())
        print(
            f"epoch {epoch:3d}  loss {loss.item():.3f}  link loss per level "
            f"{[round(v, 3) for v in out.link_loss.tolist()]}  test accuracy "
            f"{correct / len(test):.3f}"
        )


if __name__ == "__main__":
    main()
