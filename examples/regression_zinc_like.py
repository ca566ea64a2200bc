"""Graph regression on ZINC-like molecules: categorical atom and bond types, a real-valued
target, GINE on the first level (it reads the bond types), MAE.

The molecules here are random stand-ins in ZINC's format (``x``: one atom type of 28 per node,
``edge_attr``: one bond type of 4 per edge, ``y``: one float per graph), split 80/10/10 and
given to ``GraphDataModule`` as ``{"train", "val", "test"}``, as PyG's ``ZINC(split=...)``
gives them (``diffpool-train data=zinc`` trains on the real one). The target is a function of
the atom and bond types, so the model has something to learn. ``CategoricalEncoder`` embeds
the types; the task (regression) is inferred from the float targets, and the epoch of the lowest
validation MAE is the one tested (its checkpoint in a temporary folder: nothing is left behind).

    python examples/regression_zinc_like.py --epochs 20
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from diffpool.training import GraphClassifier, GraphDataModule

ATOM_TYPES, BOND_TYPES = 28, 4


def zinc_like(num_graphs: int, seed: int = 0) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(ATOM_TYPES, generator=gen)  # what each atom type adds to the target
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(9, 38, (1,), generator=gen))
        chain = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
        rings = torch.randint(0, n, (2, n // 6 + 1), generator=gen)
        edge_index = to_undirected(torch.cat([chain, rings], 1), num_nodes=n)
        atoms = torch.randint(0, ATOM_TYPES, (n, 1), generator=gen)
        bonds = torch.randint(1, BOND_TYPES, (edge_index.size(1),), generator=gen)
        y = weight[atoms].mean() + 0.1 * (bonds == 2).float().mean()
        graphs.append(Data(x=atoms, edge_index=edge_index, edge_attr=bonds, y=y.view(1)))
    return graphs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--graphs", type=int, default=1000)
    args = parser.parse_args(argv)

    graphs = zinc_like(args.graphs)
    a, b = len(graphs) * 8 // 10, len(graphs) * 9 // 10
    hidden = 32
    data = GraphDataModule(
        {"train": graphs[:a], "val": graphs[a:b], "test": graphs[b:]},
        split="dataset",
        node_encoder={"_target_": "diffpool.nn.CategoricalEncoder",
                      "cardinalities": [ATOM_TYPES], "out_channels": hidden},
        edge_encoder={"_target_": "diffpool.nn.CategoricalEncoder",
                      "cardinalities": [BOND_TYPES], "out_channels": hidden},
        batch_size=64,
    )  # fmt: skip
    data.setup()
    module = GraphClassifier(
        {
            "_target_": "diffpool.models.build_model",
            "variant": "diffpool",
            "encoder": "gine",
            "hidden_channels": hidden,
            "ratio": 0.25,
            "budget": "per_graph",
        },
    )  # the data's facts (one output: the target value; its encoders): from the data module
    with tempfile.TemporaryDirectory() as folder:  # the best epoch's weights, then nothing left
        # the epoch of the lowest validation MAE (the task's metric and direction) is tested
        best = ModelCheckpoint(
            folder, "{epoch}", monitor=f"val/{data.task.metric}", mode=data.task.mode
        )
        trainer = Trainer(
            max_epochs=args.epochs,
            logger=False,
            callbacks=[best],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=data)
        (tested,) = trainer.test(module, datamodule=data, ckpt_path="best", verbose=False)
        epoch = best.best_model_path.rpartition("epoch=")[2].removesuffix(".ckpt")
    spread = torch.stack([g.y for g in graphs[b:]]).std().item()
    print(
        f"{data.task.name}: test MAE {tested['test/mae']:.4f} at epoch {epoch}, the lowest "
        f"validation MAE ({best.best_model_score:.4f}; target std {spread:.4f})"
    )


if __name__ == "__main__":
    main()
