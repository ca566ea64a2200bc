"""Pool large graphs with per-graph cluster budgets, and see what they save.

A batch of graphs of very different sizes (like D&D, whose largest graph has 5,748 nodes and
its mean 284): with the paper's fixed rule every graph gets C = ratio * the largest graph's
nodes clusters; with per-graph budgets graph g gets ceil(ratio * N_g). The script times one
forward and backward pass of both and prints the fewest, most and mean cluster slots a graph
uses.

    python examples/large_graphs.py --largest 4000 --graphs 20
"""

from __future__ import annotations

import argparse
import time

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

from diffpool import DiffPoolConv


def batch_of_graphs(largest: int, num_graphs: int, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(largest // 40, largest // 4, (num_graphs,), generator=gen)
    sizes[0] = largest
    graphs = []
    for n in sizes.tolist():
        edges = torch.randint(0, n, (2, 3 * n), generator=gen)  # average degree about 6
        graphs.append(
            Data(x=torch.randn(n, 16, generator=gen), edge_index=to_undirected(edges, num_nodes=n))
        )
    return Batch.from_data_list(graphs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--largest", type=int, default=4000, help="nodes of the largest graph")
    parser.add_argument("--graphs", type=int, default=20)
    parser.add_argument("--ratio", type=float, default=0.25)
    args = parser.parse_args(argv)

    batch = batch_of_graphs(args.largest, args.graphs)
    clusters = -(-int(args.ratio * args.largest * 1e6) // int(1e6))
    print(f"{batch.num_graphs} graphs, {batch.num_nodes} nodes, C = {clusters} cluster slots")
    for name, ratio in (("fixed", None), ("per-graph", args.ratio)):
        torch.manual_seed(0)
        layer = DiffPoolConv.from_encoder("sage", 16, 32, clusters, concat=True, ratio=ratio)
        start = time.perf_counter()
        out = layer(batch.x, batch.edge_index, batch.batch, return_assignment=False)
        (out.aux_loss + out.x.mean()).backward()
        seconds = time.perf_counter() - start
        used = out.cluster_mask.sum(-1)
        print(
            f"{name:>9}: {seconds:.2f} s forward + backward, output {tuple(out.adj.shape)}, "
            f"clusters per graph {int(used.min())}-{int(used.max())} "
            f"(mean {used.float().mean():.0f})"
        )


if __name__ == "__main__":
    main()
