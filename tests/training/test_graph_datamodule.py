"""GraphDataModule: any PyG dataset, the three split strategies, the task, bad input."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from lightning.pytorch import Trainer

from diffpool.datasets import DataUnavailableError, fold_split
from diffpool.training import GraphClassifier, GraphDataModule
from diffpool.training.tasks import TargetError
from helpers import TinyGraphDataset, tiny_graphs

SPEC = {"_target_": "helpers.TinyGraphDataset", "kind": "regression"}


def _module(dm, encoder="sage", **kwargs):
    model = {"_target_": "diffpool.models.build_model", "variant": "diffpool",
             "encoder": encoder, "num_levels": 2, "hidden_channels": 16}  # fmt: skip
    return GraphClassifier(model, **kwargs)  # the data's facts: from the data module


def _trainer(max_epochs=1, **kwargs):
    return Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kwargs)  # fmt: skip


def test_kfold_is_stratified_for_classes_and_plain_for_values():
    graphs = tiny_graphs("multiclass", 60)
    dm = GraphDataModule(graphs, fold=3, seed=5)
    dm.setup()
    expected = fold_split(torch.tensor([g.y.item() for g in graphs]), 3, 10, 5, 0.1)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(dm.split, part), getattr(expected, part))
    assert (dm.task.name, dm.num_classes, dm.task.metric) == ("multiclass", 3, "acc")
    regression = GraphDataModule(tiny_graphs("regression", 60), fold=3, seed=5)
    regression.setup()
    plain = fold_split(torch.zeros(60, dtype=torch.long), 3, 10, 5, 0.1)
    assert torch.equal(regression.split.test, plain.test)
    assert (regression.task.name, regression.task.metric, regression.task.mode) == (
        "regression", "mae", "min",
    )  # fmt: skip
    # the graphs of a list are not changed (graph_id goes onto copies)
    batch = next(iter(dm.train_dataloader()))
    assert batch.graph_id.numel() == batch.num_graphs and "graph_id" not in graphs[0]


def test_dataset_split_from_a_mapping_a_split_class_and_get_idx_split():
    graphs = tiny_graphs("binary", 40)
    dm = GraphDataModule(
        {"train": graphs[:20], "val": graphs[20:30], "test": graphs[30:]}, split="dataset",
        task="binary",
    )  # fmt: skip
    dm.setup()
    assert dm.split.test.tolist() == list(range(30, 40)) and dm.task.metric == "rocauc"
    assert (dm.fold, dm.num_folds) == (0, 1)  # one split, not fold 0 of 10
    assert dm.val_stages == ("val", "heldout")

    per_split = GraphDataModule(dict(SPEC, num_graphs=40), split="dataset")
    per_split.setup()
    assert [len(p) for p in (per_split.split.train, per_split.split.val, per_split.split.test)] == [
        20, 10, 10,
    ]  # fmt: skip
    assert per_split.hparams.dataset == dict(SPEC, num_graphs=40)  # a spec is kept

    class WithSplit(TinyGraphDataset):
        def get_idx_split(self):
            return {"train": torch.arange(0, 30), "valid": torch.arange(30, 40),
                    "test": torch.arange(40, 48)}  # fmt: skip

    own = GraphDataModule(WithSplit(kind="regression"), split="dataset")
    own.setup()
    assert own.split.val.tolist() == list(range(30, 40))
    with pytest.raises(ValueError, match="no get_idx_split"):
        GraphDataModule(tiny_graphs(), split="dataset").setup()

    class Leaking(TinyGraphDataset):  # checked as a split file is
        parts = {"train": torch.arange(0, 30), "valid": torch.arange(25, 40),
                 "test": torch.arange(40, 48)}  # fmt: skip

        def get_idx_split(self):
            return self.parts

    with pytest.raises(ValueError, match=r"get_idx_split\(\) of tiny-regression: 5 graphs are "
                       "in both train and val"):  # fmt: skip
        GraphDataModule(Leaking(kind="regression"), split="dataset").setup()
    Leaking.parts = dict(Leaking.parts, valid=torch.arange(30, 40), test=torch.tensor([40, 48]))
    with pytest.raises(ValueError, match="test names graph 48, outside the dataset's 48"):
        GraphDataModule(Leaking(kind="regression"), split="dataset").setup()


def test_split_file(tmp_path):
    file = tmp_path / "splits.json"
    folds = [
        {"test": list(range(i * 12, i * 12 + 12)),
         "model_selection": [{"train": [j for j in range(48) if not i * 12 <= j < i * 12 + 14][:30],
                              "validation": [(i * 12 + 12 + k) % 48 for k in range(2)]}]}
        for i in range(4)
    ]  # fmt: skip
    file.write_text(json.dumps(folds))
    dm = GraphDataModule(tiny_graphs(num_graphs=48), split="file", split_file=str(file), fold=2)
    dm.setup()
    assert dm.split.test.tolist() == list(range(24, 36)) and dm.num_folds == 4
    file.write_text(json.dumps({"train": [0, 1], "val": [2], "test": [2, 3]}))
    with pytest.raises(ValueError, match=r"splits.json, fold 0: 1 graphs are in both val and test"):
        GraphDataModule(tiny_graphs(), split="file", split_file=str(file)).setup()
    file.write_text(json.dumps({"training": [0]}))
    with pytest.raises(ValueError, match="this object has keys"):
        GraphDataModule(tiny_graphs(), split="file", split_file=str(file)).setup()
    with pytest.raises(ValueError, match="needs split_file"):
        GraphDataModule(tiny_graphs(), split="file")


@pytest.mark.parametrize(
    "setting, match",
    [
        (
            dict(split="file", split_file="f.json", val_ratio=0.0),
            "val_ratio=0.0 sets .* split file",
        ),
        (dict(split="dataset", val_ratio=0.2), "val_ratio=0.2 sets .* from the dataset"),
        (dict(inner=1), "inner=1 .* needs split='file', got split='kfold'"),
        (dict(split="dataset", inner=2), "inner=2 .* split='dataset'"),
    ],
)
def test_a_split_setting_the_split_does_not_read_is_an_error(setting, match):
    """``val_ratio`` belongs to k-fold splits, ``inner`` to split files: set for another split,
    a run would go on without them (``data.val_ratio=0`` with a split file still validates)."""
    with pytest.raises(ValueError, match=match):
        GraphDataModule(tiny_graphs(), **setting)


def test_predict_dataloader_and_plain_hyperparameters(tmp_path):
    """``predict_split="all"`` gives every graph in dataset order; the hyperparameters are
    plain data (a checkpoint loads with ``weights_only=True``)."""
    from omegaconf import OmegaConf

    encoder = OmegaConf.create({"_target_": "torch.nn.Identity"})
    dm = GraphDataModule(tiny_graphs(num_graphs=40), num_folds=4, val_ratio=0.0,
                         predict_split="all", split_file=tmp_path / "unused.json",
                         node_encoder=encoder)  # fmt: skip
    assert dm.val_stages == ("heldout",)
    assert [i for b in dm.predict_dataloader() for i in b.graph_id.tolist()] == list(range(40))
    torch.save(dict(dm.hparams), tmp_path / "hparams.pt")
    loaded = torch.load(tmp_path / "hparams.pt", weights_only=True)
    assert loaded["node_encoder"] == {"_target_": "torch.nn.Identity"}
    assert loaded["split_file"] == str(tmp_path / "unused.json")
    with pytest.raises(ValueError, match="predict_split must be one of"):
        GraphDataModule(tiny_graphs(), predict_split="everything")


def test_bad_datasets_are_named():
    no_y = tiny_graphs()
    del no_y[3].y
    with pytest.raises(TargetError, match="graph 3 of dataset has no target"):
        GraphDataModule(no_y).setup()
    no_x = tiny_graphs()
    for g in no_x:
        del g.x
    with pytest.raises(ValueError, match="no node features"):
        GraphDataModule(no_x).setup()
    categorical = tiny_graphs()
    for g in categorical:
        g.x = g.x.long().abs()
    with pytest.raises(ValueError, match="categorical .* node_encoder"):
        GraphDataModule(categorical).setup()
    with pytest.raises(ValueError, match="split must be"):
        GraphDataModule(tiny_graphs(), split="random")
    with pytest.raises(TargetError, match="4 targets per graph"):
        GraphDataModule(tiny_graphs("multilabel")).setup()


class Offline(TinyGraphDataset):
    def __init__(self, root=None, **kwargs):
        raise urllib.error.URLError("no network")


def test_data_that_is_not_there_says_where_it_goes(tmp_path, monkeypatch):
    import helpers

    monkeypatch.setattr(helpers, "Offline", Offline, raising=False)
    spec = {"_target_": "helpers.Offline", "root": str(tmp_path / "mine")}
    with pytest.raises(DataUnavailableError, match=f"not in {tmp_path / 'mine'}.*put its files"):
        GraphDataModule(spec).setup()


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
def test_every_task_trains_and_its_test_metric_is_the_hand_computed_one(kind):
    task = {"binary": "binary", "multilabel": "multilabel"}.get(kind)
    dm = GraphDataModule(tiny_graphs(kind, 40), task=task, batch_size=8, num_folds=4)
    module = _module(dm)
    trainer = _trainer()
    trainer.fit(module, datamodule=dm)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    # the same test graphs, predicted, and scored by hand
    loader = dm.test_dataloader()
    module.eval()
    with torch.no_grad():
        outs = [(module(b, return_assignments=False).logits, b.y) for b in loader]
    out = torch.cat([o for o, _ in outs])
    y = torch.cat([t.view(len(o), -1) for o, t in outs]).float()
    if kind == "multiclass":
        assert tested["test/acc"] == pytest.approx((out.argmax(-1) == y[:, 0]).float().mean())
    elif kind == "regression":
        assert tested["test/mae"] == pytest.approx((out - y).abs().mean().item(), rel=1e-5)
        assert tested["test/rmse"] == pytest.approx((out - y).pow(2).mean().sqrt().item(), rel=1e-5)
    else:
        # ROC-AUC per label by counting ranked pairs, over the labels present, then the mean
        aucs = []
        for t in range(y.size(1)):
            present = ~torch.isnan(y[:, t])
            score, label = out[present, t], y[present, t]
            pos, neg = score[label == 1], score[label == 0]
            pairs = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :])
            aucs.append(pairs.mean().item())
        assert tested["test/rocauc"] == pytest.approx(sum(aucs) / len(aucs), abs=1e-5)
    assert module.task.name == (task or kind)


def test_edge_features_reach_edge_encoders_only():
    dm = GraphDataModule(tiny_graphs("regression", 24), num_folds=4)
    dm.setup()
    assert dm.edge_dim == 3
    gine = _module(dm, encoder="gine")
    gine.connect(dm)  # what fitting does: the data's facts, edge_dim included
    batch = next(iter(dm.test_dataloader()))
    gine.eval()
    with torch.no_grad():
        first = gine(batch).logits
        batch.edge_attr = batch.edge_attr + 1.0
        assert not torch.allclose(first, gine(batch).logits)
    assert gine.model.levels[0].embed.edge_dim == 3
    assert gine.hparams.edge_dim == 3  # in the checkpoint: it reloads without the data
    sage = _module(dm, encoder="sage")
    sage.connect(dm)  # the data's edge features are left out for an encoder without them
    assert sage.hparams.edge_dim is None
    # given by hand, as the network's own arguments
    with pytest.raises(ValueError, match="encoder 'gine' needs edge features"):
        _module(
            dm,
            encoder="gine",
            in_channels=dm.num_features,
            num_classes=1,
            task="regression",
            max_num_nodes=9,
        )
    with pytest.raises(ValueError, match="encoder 'sage' takes no edge features"):
        _module(
            dm,
            encoder="sage",
            in_channels=dm.num_features,
            num_classes=1,
            task="regression",
            max_num_nodes=9,
            edge_dim=3,
        )
    without = GraphDataModule(tiny_graphs("regression", 24), num_folds=4, edge_features=False)
    assert without.edge_dim is None


class OfflineHttp(TinyGraphDataset):
    """As PyG's downloads fail: an HTTP client's error, raised from a connection error."""

    def __init__(self, root=None, **kwargs):
        try:
            raise ConnectionError("Name or service not known")
        except ConnectionError as err:
            raise RuntimeError("Cannot connect to host example.org:443") from err


class Broken(TinyGraphDataset):
    def __init__(self, root=None, **kwargs):
        raise KeyError("a bug of the dataset's own")


def test_a_failed_download_of_any_client_is_named(tmp_path, monkeypatch):
    import helpers

    monkeypatch.setattr(helpers, "OfflineHttp", OfflineHttp, raising=False)
    spec = {"_target_": "helpers.OfflineHttp", "root": str(tmp_path / "mine")}
    with pytest.raises(DataUnavailableError, match="could not be downloaded"):
        GraphDataModule(spec).setup()
    # other errors of a dataset are its own
    monkeypatch.setattr(helpers, "Broken", Broken, raising=False)
    with pytest.raises(KeyError):
        GraphDataModule({"_target_": "helpers.Broken"}).setup()


def test_training_batches_are_reshuffled_every_epoch_and_the_same_on_a_rerun():
    """Lightning sets the epoch on the batch sampler's sampler (not on the batch sampler):
    every epoch draws other batches, and the same ones for the same seed and epoch."""
    from lightning.pytorch import Callback

    class Batches(Callback):
        def __init__(self):
            self.seen: dict[int, list[list[int]]] = {}

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.setdefault(trainer.current_epoch, []).append(batch.graph_id.tolist())

    runs = []
    for _ in range(2):
        dm = GraphDataModule(tiny_graphs("multiclass", 60), fold=0, num_folds=4, batch_size=10)
        batches = Batches()
        _trainer(max_epochs=3, callbacks=[batches]).fit(_module(dm), datamodule=dm)
        runs.append(batches.seen)
    epochs = runs[0]
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert all(sorted(sum(epochs[e], [])) == sorted(sum(epochs[0], [])) for e in epochs)
    assert runs[1] == runs[0]


def test_a_distributed_sampler_sets_the_epoch_of_the_shuffle():
    from torch.utils.data import DistributedSampler

    from diffpool.training import GraphBatchSampler

    given = DistributedSampler(range(40), num_replicas=2, rank=1, shuffle=False)
    sampler = GraphBatchSampler(40, 4, shuffle=True, sampler=given)
    first = list(sampler)
    given.set_epoch(1)
    assert sampler.epoch == 1 and list(sampler) != first
    given.set_epoch(0)
    assert list(sampler) == first


def test_the_transform_is_what_features_targets_and_sizes_are_read_from():
    """The data module's transform (a callable, a spec or a list of them) makes the graphs
    the loaders give; the feature check, the widths, the task and the largest graph are
    read from those, as from a dataset's own transform."""
    import torch_geometric.transforms as T
    from torch_geometric.data import InMemoryDataset

    graphs = tiny_graphs("multiclass", 40)
    bare = [g.clone() for g in graphs]
    for g in bare:
        g.num_nodes = g.x.size(0)
        del g.x
    degree = {"_target_": "torch_geometric.transforms.OneHotDegree", "max_degree": 12}
    dm = GraphDataModule(bare, num_folds=4, transform=degree)
    dm.setup()
    assert dm.num_features == 13 == dm.dataset[0].x.size(1)
    both = [degree, {"_target_": "torch_geometric.transforms.VirtualNode"}]
    dm = GraphDataModule(bare, num_folds=4, transform=both)
    assert dm.max_num_nodes == max(g.num_nodes for g in graphs) + 1
    dm = GraphDataModule(graphs, num_folds=4, transform=T.OneHotDegree(12, cat=True))
    assert dm.num_features == 5 + 13
    _trainer(max_epochs=1).fit(_module(dm), datamodule=dm)

    class FirstTarget(InMemoryDataset):  # QM9's pattern: stored y [1, 4], the task's 1
        def __init__(self):
            super().__init__(transform=lambda d: d.update({"y": d.y[:, :1]}))
            data = tiny_graphs("regression", 40)
            for d in data:
                d.y = d.y.view(1, 1).repeat(1, 4)
            self.data, self.slices = self.collate(data)

    dm = GraphDataModule(FirstTarget(), num_folds=4)
    dm.setup()
    assert (dm.task.name, dm.task.num_outputs) == ("regression", 1)
    with pytest.raises(TypeError, match="transform must be a callable or a '_target_' spec"):
        GraphDataModule(graphs, transform=3)


def test_a_transform_spec_read_from_a_file_is_one_of_pygs():
    from diffpool.utils import targets

    with targets.reading("results.json"):
        spec = {"_target_": "torch_geometric.transforms.OneHotDegree", "max_degree": 3}
        assert GraphDataModule(tiny_graphs(), transform=spec).transform is not None
        with pytest.raises(targets.UntrustedTargetError):
            GraphDataModule(tiny_graphs(), transform={"_target_": "os.system", "command": "x"})


def test_a_dataset_specs_own_transform_may_be_a_spec():
    """``+data.dataset.transform={_target_: ...}``: the dataset gets the transform built
    (it got the dict, and failed with "'dict' object is not callable"); from a file, only
    PyG's transforms, as the data module's own."""
    from diffpool.utils import targets

    degree = {"_target_": "torch_geometric.transforms.OneHotDegree", "max_degree": 40}
    fake = {"_target_": "torch_geometric.datasets.FakeDataset", "num_graphs": 12,
            "avg_num_nodes": 8, "num_channels": 3, "transform": degree}  # fmt: skip
    dm = GraphDataModule(fake, num_folds=3)
    dm.setup()
    assert dm.num_features == 3 + 41
    with targets.reading("results.json", trusted=[fake["_target_"]]):
        with pytest.raises(targets.UntrustedTargetError, match="os.system"):
            GraphDataModule({**fake, "pre_transform": {"_target_": "os.system"}}).setup()


def test_an_empty_part_of_the_split_is_named():
    dm = GraphDataModule(
        tiny_graphs(num_graphs=40), num_folds=4, val_ratio=0.0, predict_split="val"
    )
    dm.setup()
    with pytest.raises(ValueError, match="the val set of dataset is empty"):
        dm.predict_dataloader()
