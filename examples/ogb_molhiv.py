"""OGB graph property prediction: DiffPool on ogbg-molhiv with OGB's scaffold split, atom and
bond encoders, and its leaderboard metric from ``ogb.graphproppred.Evaluator``.

Needs the ``ogb`` extra and the dataset: the ``hiv/`` folder of OGB's ``hiv.zip`` moved to
``<root>/ogbg_molhiv/`` (or ``--download`` where the internet is reachable). The same from the
command line: ``diffpool-train data=ogbg-molhiv model/encoder=gine``.

    python examples/ogb_molhiv.py --root data/OGB --epochs 10
"""

from __future__ import annotations

import argparse

from lightning.pytorch import Trainer

from diffpool.training import GraphClassifier, GraphDataModule


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/OGB")
    parser.add_argument("--name", default="ogbg-molhiv")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args(argv)

    hidden = 64
    data = GraphDataModule(
        {"_target_": "diffpool.datasets.load_ogb", "name": args.name, "root": args.root,
         "download": args.download},
        split="dataset",  # OGB's own split (get_idx_split)
        node_encoder={"_target_": "ogb.graphproppred.mol_encoder.AtomEncoder", "emb_dim": hidden},
        edge_encoder={"_target_": "ogb.graphproppred.mol_encoder.BondEncoder", "emb_dim": hidden},
        batch_size=32,
    )  # fmt: skip
    data.setup()  # the task (binary) and metric (rocauc) as OGB declares them
    module = GraphClassifier(
        {
            "_target_": "diffpool.models.build_model",
            "variant": "diffpool",
            "encoder": "gine",
            "hidden_channels": hidden,
            "ratio": 0.25,
        },
    )  # the data's facts (task, outputs, encoders, edge features): from the data module
    trainer = Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    (tested,) = trainer.test(module, datamodule=data, verbose=False)
    metric = data.task.metric
    print(f"{data.name}: test {metric} {tested[f'test/{metric}']:.4f}, OGB evaluator "
          f"{tested[f'test/ogb_{metric}']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
