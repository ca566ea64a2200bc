"""Train DiffPool with Lightning on a dataset you bring: an in-memory list of ``Data``.

Any list of PyG graphs with node features ``x``, ``edge_index`` and a target ``y`` works;
here it is a random one (the class: whether a graph has more edges than nodes).
``GraphDataModule`` splits it (stratified 10-fold CV, fold 0 tests), infers the task from the
targets (integer labels: multiclass) and batches it; ``GraphClassifier`` trains the model of a
spec with that task's loss and metrics.

    python examples/own_dataset.py --epochs 5
"""

from __future__ import annotations

import argparse

import torch
from lightning.pytorch import Trainer
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from diffpool.training import GraphClassifier, GraphDataModule


def my_graphs(num_graphs: int, seed: int = 0) -> list[Data]:
    """A stand-in for your data: graphs of 10-40 nodes with 3 node features each."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(10, 41, (1,), generator=gen))
        m = int(torch.randint(n // 2, 2 * n, (1,), generator=gen))
        edge_index = to_undirected(torch.randint(0, n, (2, m), generator=gen), num_nodes=n)
        y = torch.tensor([int(edge_index.size(1) // 2 > n)])
        graphs.append(Data(x=torch.randn(n, 3, generator=gen), edge_index=edge_index, y=y))
    return graphs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--graphs", type=int, default=600)
    args = parser.parse_args(argv)

    data = GraphDataModule(my_graphs(args.graphs), fold=0, batch_size=32)
    data.setup()
    module = GraphClassifier(
        {"_target_": "diffpool.models.build_model", "variant": "diffpool", "ratio": 0.25}
    )  # the data's facts (input width, task, classes, largest graph): from the data module
    trainer = Trainer(
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    (tested,) = trainer.test(module, datamodule=data, verbose=False)
    print(f"{data.task.name} task, test accuracy {tested['test/acc']:.3f}")


if __name__ == "__main__":
    main()
