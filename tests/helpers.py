"""Shared test helpers: random sparse batches, TU batches, weight tying with PyG dense layers."""

from __future__ import annotations

import importlib.util
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import DenseGCNConv, DenseSAGEConv, GCNConv, SAGEConv
from torch_geometric.utils import to_undirected

#: the repository's root
ROOT = Path(__file__).resolve().parents[1]

SHARED_TU = Path(
    os.environ.get(
        "DIFFPOOL_TU_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "TU"
    )
)


def random_graph(num_nodes: int, avg_degree: float = 3.0, generator=None) -> torch.Tensor:
    """Undirected random edge_index (no self-loops) of one graph."""
    num_edges = max(1, int(num_nodes * avg_degree / 2))
    if num_nodes < 2:
        return torch.empty(2, 0, dtype=torch.long)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    ei = ei[:, ei[0] != ei[1]]
    return to_undirected(ei, num_nodes=num_nodes)


def random_batch(sizes, num_features: int = 4, seed: int = 0, avg_degree: float = 3.0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    graphs = [
        Data(
            x=torch.randn(n, num_features, generator=gen),
            edge_index=random_graph(n, avg_degree, gen),
        )
        for n in sizes
    ]
    return Batch.from_data_list(graphs)


def tie_sage(dense: DenseSAGEConv, sparse: SAGEConv) -> None:
    """Give a DenseSAGEConv the weights of a SAGEConv."""
    with torch.no_grad():
        dense.lin_rel.weight.copy_(sparse.lin_l.weight)
        dense.lin_root.weight.copy_(sparse.lin_r.weight)
        dense.lin_root.bias.copy_(sparse.lin_l.bias)


def tie_gcn(dense: DenseGCNConv, sparse: GCNConv) -> None:
    with torch.no_grad():
        dense.lin.weight.copy_(sparse.lin.weight)
        dense.bias.copy_(sparse.bias)


#: the official TU archives that ship inside the package
PACKAGE_ARCHIVES = ROOT / "src" / "diffpool" / "datasets" / "archives"


def tu_archive(name: str) -> Path:
    """The official ``NAME.zip``: the package's copy for the bundled datasets, else the one in
    ``../shared/data/TU`` (``$DIFFPOOL_TU_DIR``); skips the test when there is none."""
    for archive in (PACKAGE_ARCHIVES / f"{name}.zip", SHARED_TU / f"{name}.zip"):
        if archive.exists():
            return archive
    pytest.skip(f"{name}.zip is neither bundled nor in {SHARED_TU}")


def tu_dataset(name: str, root: Path):
    """A real TU dataset, read by PyG from its official archive (:func:`tu_archive`)."""
    archive = tu_archive(name)
    from torch_geometric.datasets import TUDataset

    target = root / name
    if not (target / "raw").exists():
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
        (target / name).rename(target / "raw")
    return TUDataset(str(root), name)


class InterruptAtEpoch:
    """A Lightning callback that presses Ctrl-C at the start of ``epoch``."""

    def __new__(cls, epoch: int):
        from lightning.pytorch import Callback

        class _Interrupt(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == epoch:
                    raise KeyboardInterrupt

        return _Interrupt()


class PoisonAtEpoch:
    """A Lightning callback that sets every weight to NaN at the start of ``epoch``'s
    training; with ``when="validation"`` at the start of its validation (the training steps
    stay finite); with ``what="running_var"`` only the batch norms' running variances, to
    infinity (the outputs stay finite, the model's state does not)."""

    def __new__(cls, epoch: int, when: str = "train", what: str = "weights"):
        from lightning.pytorch import Callback

        def poison(trainer, pl_module):
            if trainer.current_epoch != epoch:
                return
            with torch.no_grad():
                if what == "weights":
                    for p in pl_module.parameters():
                        p.fill_(float("nan"))
                else:
                    for name, buffer in pl_module.named_buffers():
                        if name.endswith("running_var"):
                            buffer.fill_(float("inf"))

        class _Poison(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if when == "train":
                    poison(trainer, pl_module)

            def on_validation_epoch_start(self, trainer, pl_module):
                if when == "validation" and not trainer.sanity_checking:
                    poison(trainer, pl_module)

        return _Poison()


class RecordRanks:
    """A Lightning callback that writes, per rank, what the rank saw in every epoch: the
    ``graph_id`` of its training and validation graphs, its validation predictions, and the
    logged (synchronised) ``val/acc``, to ``directory/rank{r}.json``."""

    def __new__(cls, directory: str):
        import json
        from pathlib import Path

        from lightning.pytorch import Callback

        class _Record(Callback):
            def __init__(self):
                self.epochs = []

            def on_train_epoch_start(self, trainer, pl_module):
                self.epochs.append({"train": [], "val": [], "val_correct": 0})

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.epochs[-1]["train"] += batch.graph_id.tolist()

            def on_validation_batch_end(self, trainer, pl_module, outputs, batch, idx, dl=0):
                if dl == 0 and self.epochs:
                    pred = pl_module(batch).logits.argmax(-1)
                    self.epochs[-1]["val"] += batch.graph_id.tolist()
                    self.epochs[-1]["val_correct"] += int((pred == batch.y).sum())

            def on_train_epoch_end(self, trainer, pl_module):
                self.epochs[-1]["val_acc"] = float(trainer.callback_metrics["val/acc"])
                self.epochs[-1]["world_size"] = trainer.world_size
                path = Path(directory) / f"rank{trainer.global_rank}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(self.epochs))

        return _Record()


def load_script(path: Path, name: str):
    """A benchmark script as a module (benchmarks/ is not a package); its folder is on the
    import path while it loads, for its sibling imports (``measure``)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


class MeanPoolModel(torch.nn.Module):
    """A user's own classifier for :class:`~diffpool.training.GraphClassifier` (``_target_:
    helpers.MeanPoolModel``): a forward without ``return_assignments``."""

    def __init__(self, in_channels: int, num_classes: int, max_num_nodes=None):
        super().__init__()
        self.lin = torch.nn.Linear(in_channels, num_classes)

    def forward(self, x, edge_index, batch, edge_weight=None, *, batch_size=None, clusters=None):
        from torch_geometric.nn import global_mean_pool

        from diffpool.models.output import ClassifierOutput

        logits = self.lin(global_mean_pool(x, batch, batch_size))
        zero = logits.new_zeros(())
        return ClassifierOutput(logits, zero, logits.new_zeros(0), logits.new_zeros(0))


def write_tu(raw: Path, name: str, node_labels: bool, edge_labels: bool = False) -> None:
    """Three tiny graphs in the TU text format: a triangle, a path of 2, a star of 4 (with
    ``edge_labels``, a label per edge, as MUTAG's bond types)."""
    raw.mkdir(parents=True)
    edges = [(1, 2), (2, 3), (3, 1), (4, 5), (6, 7), (6, 8), (6, 9)]
    both = [e for a, b in edges for e in ((a, b), (b, a))]
    (raw / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in both))
    if edge_labels:
        (raw / f"{name}_edge_labels.txt").write_text(
            "".join(f"{i % 3}\n" for i in range(len(both)))
        )
    (raw / f"{name}_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n3\n3\n3\n3\n")
    (raw / f"{name}_graph_labels.txt").write_text("1\n2\n1\n")
    if node_labels:
        (raw / f"{name}_node_labels.txt").write_text("0\n1\n0\n1\n1\n2\n0\n0\n0\n")


def trained_mutag_run(root: Path, name: str, *overrides: str) -> Path:
    """A small MUTAG run of ``diffpool-train``'s code, in ``root/name`` (the dataset in
    ``root/TU``): two epochs, hidden 16, no logger; ``overrides`` as on the command line."""
    from hydra import compose, initialize_config_module

    from diffpool.training import train

    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=mutag",
                f"data.root={root / 'TU'}",
                "trainer.max_epochs=2",
                "model.hidden_channels=16",
                "logger=none",
                f"output_dir={root / name}",
                *overrides,
            ],
        )
    train(cfg)
    return root / name


def write_ogb_layout(root: Path, name: str = "ogbg-molhiv", num_graphs: int = 40, seed: int = 0):
    """A tiny dataset in the layout OGB's ``PygGraphPropPredDataset(name, root)`` reads from
    disk (what OGB's zip unpacks): ``root/<name with _>/raw/*.csv.gz``, ``split/<type>/``,
    ``RELEASE_v1.txt``. Molecule-like graphs: 9 integer atom features, 3 integer bond
    features, ``num tasks`` labels per graph (0/1, some NaN for multi-task datasets), split
    60/20/20. Returns the graphs' labels ``[num_graphs, tasks]``."""
    import numpy as np
    import pandas as pd
    from ogb.graphproppred import PygGraphPropPredDataset  # noqa: F401  (the ogb extra)
    from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims

    meta = pd.read_csv(
        Path(importlib.util.find_spec("ogb.graphproppred").origin).parent / "master.csv",
        index_col=0,
        keep_default_na=False,
    )[name]
    tasks = int(meta["num tasks"])
    rng = np.random.default_rng(seed)
    folder = Path(root) / name.replace("-", "_")
    (folder / "raw").mkdir(parents=True)
    edges, node_feat, edge_feat, nodes, counts = [], [], [], [], []
    for _ in range(num_graphs):
        n = int(rng.integers(3, 9))
        src = np.arange(n - 1)
        pairs = np.stack([src, src + 1], axis=1)  # a chain: connected, one direction (OGB)
        edges.append(pairs)
        nodes.append(n)
        counts.append(len(pairs))
        node_feat.append(np.stack([rng.integers(0, d, n) for d in get_atom_feature_dims()], 1))
        edge_feat.append(
            np.stack([rng.integers(0, d, len(pairs)) for d in get_bond_feature_dims()], 1)
        )
    labels = rng.integers(0, 2, (num_graphs, tasks)).astype(float)
    if meta["task type"] == "regression":
        labels = rng.normal(size=(num_graphs, tasks))
    elif tasks > 1:
        labels[rng.random(labels.shape) < 0.2] = np.nan
    files = {
        "edge": np.concatenate(edges),
        "node-feat": np.concatenate(node_feat),
        "edge-feat": np.concatenate(edge_feat),
        "num-node-list": np.array(nodes)[:, None],
        "num-edge-list": np.array(counts)[:, None],
        "graph-label": labels,
    }
    for stem, values in files.items():
        pd.DataFrame(values).to_csv(
            folder / "raw" / f"{stem}.csv.gz", header=False, index=False, compression="gzip"
        )
    split = folder / "split" / meta["split"]
    split.mkdir(parents=True)
    order = rng.permutation(num_graphs)
    a, b = int(0.6 * num_graphs), int(0.8 * num_graphs)
    for part, idx in (("train", order[:a]), ("valid", order[a:b]), ("test", order[b:])):
        pd.DataFrame(np.sort(idx)).to_csv(
            split / f"{part}.csv.gz", header=False, index=False, compression="gzip"
        )
    (folder / f"RELEASE_v{meta['version']}.txt").write_text("tiny test copy\n")
    return torch.tensor(labels)


def tiny_graphs(
    kind: str = "multiclass", num_graphs: int = 48, seed: int = 0, edge_dim: int = 3
) -> list[Data]:
    """Small random graphs with a target of each task's kind, learnable from the features:
    ``multiclass`` (3 classes, ``y`` ``[1]``), ``binary`` (``y`` ``[1, 1]``, OGB style),
    ``multilabel`` (``y`` ``[1, 4]``, a fifth of the labels NaN), ``regression``
    (``y`` ``[1]`` float); float ``x`` ``[n, 5]`` and ``edge_attr`` ``[E, edge_dim]``."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num_graphs):
        n = int(torch.randint(4, 12, (1,), generator=gen))
        x = torch.randn(n, 5, generator=gen)
        signal = x[:, 0].mean()
        if kind == "multiclass":
            y = torch.tensor([i % 3])
        elif kind == "binary":
            y = torch.tensor([[i % 2]])
        elif kind == "multilabel":
            y = torch.randint(0, 2, (1, 4), generator=gen).float()
            y[torch.rand(1, 4, generator=gen) < 0.2] = float("nan")
            y[0, i % 4] = float(i % 2)  # every label has both classes
        elif kind == "regression":
            y = signal.view(1) + 0.1 * torch.randn(1, generator=gen)
        else:
            raise ValueError(kind)
        edge_index = random_graph(n, 3.0, gen)
        graphs.append(
            Data(
                x=x,
                edge_index=edge_index,
                edge_attr=torch.randn(edge_index.size(1), edge_dim, generator=gen),
                y=y,
            )
        )
    return graphs


class TinyGraphDataset(torch.utils.data.Dataset):
    """:func:`tiny_graphs` as a dataset a ``_target_`` spec builds (``helpers.TinyGraphDataset``
    with ``PYTHONPATH=tests``); with ``split`` (``train`` / ``val`` / ``test``) one part of
    it, as PyG's ``ZINC(split=...)``."""

    def __init__(self, root: str | None = None, kind: str = "multiclass", num_graphs: int = 48,
                 seed: int = 0, split: str | None = None):  # fmt: skip
        graphs = tiny_graphs(kind, num_graphs, seed)
        half, three_quarters = num_graphs // 2, 3 * num_graphs // 4
        parts = {"train": graphs[:half], "val": graphs[half:three_quarters],
                 "test": graphs[three_quarters:]}  # fmt: skip
        self.graphs = graphs if split is None else parts[split]
        self.name = f"tiny-{kind}"

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> Data:
        return self.graphs[idx]


class IdentityEncoder(torch.nn.Identity):
    """A feature encoder of the user's own (in no registry of the package)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels


def in_time(call, pipe, seconds=30):
    """``call()`` in a thread; where it still waits on the pipe ``pipe`` after ``seconds``,
    the pipe is opened for writing and closed (the wait ends) and the test fails."""
    import contextlib
    import os
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # raised again in the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"still waiting on the pipe {pipe} after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
