"""DiffPoolConv in a plain PyTorch training loop on ENZYMES (ships with the package).

One GraphSAGE layer embeds the nodes, DiffPoolConv pools every graph into its own budget of
clusters, a dense GraphSAGE layer embeds the clusters, and a max readout feeds a linear
classifier; the pooling's auxiliary loss is added to the cross-entropy.

    python examples/enzymes_layer.py --epochs 50
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.nn import DenseSAGEConv, SAGEConv

from diffpool import DiffPoolConv
from diffpool.datasets import load_tu


class Net(torch.nn.Module):
    def __init__(self, in_channels: int, num_classes: int, max_num_nodes: int, hidden: int = 64):
        super().__init__()
        clusters = -(-max_num_nodes // 4)  # a quarter of the largest graph
        self.pool = DiffPoolConv(
            embed=SAGEConv(in_channels, hidden),
            pool=SAGEConv(in_channels, clusters),
            num_clusters=clusters,
            ratio=0.25,  # graph g gets ceil(0.25 * N_g) of them
        )
        self.conv = DenseSAGEConv(hidden, hidden)
        self.lin = torch.nn.Linear(hidden, num_classes)

    def forward(self, data):
        out = self.pool(data.x, data.edge_index, data.batch, return_assignment=False)
        x = F.relu(self.conv(out.x, out.adj, out.cluster_mask))
        x = x.masked_fill(~out.cluster_mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.lin(x), out.aux_loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--root", default="data/TU", help="where the dataset is extracted")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    dataset = load_tu("ENZYMES", args.root, node_features="both").shuffle()
    split = len(dataset) * 9 // 10
    train, test = dataset[:split], dataset[split:]
    max_nodes = max(int(d.num_nodes) for d in dataset)
    model = Net(dataset.num_features, dataset.num_classes, max_nodes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    for epoch in range(1, args.epochs + 1):
        model.train()
        for data in DataLoader(train, batch_size=20, shuffle=True):
            optimizer.zero_grad()
            logits, aux_loss = model(data)
            loss = F.cross_entropy(logits, data.y) + aux_loss
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(data)[0].argmax(-1) == data.y).sum())
                for data in DataLoader(test, batch_size=60)
            )
        print(f"epoch {epoch:3d}  loss {loss.item():.3f}  test accuracy {correct / len(test):.3f}")


if __name__ == "__main__":
    main()
