"""OGB graph-property datasets offline: a tiny copy in OGB's layout, its split, atom / bond
encoders, and OGB's evaluator beside our metrics."""

from __future__ import annotations

import re

import pytest
import torch
from lightning.pytorch import Trainer

pytest.importorskip("ogb", reason="the ogb extra")

from diffpool.datasets import DataUnavailableError, load_ogb  # noqa: E402
from diffpool.training import GraphClassifier, GraphDataModule  # noqa: E402
from helpers import write_ogb_layout  # noqa: E402

ATOMS = {"_target_": "ogb.graphproppred.mol_encoder.AtomEncoder", "emb_dim": 16}
BONDS = {"_target_": "ogb.graphproppred.mol_encoder.BondEncoder", "emb_dim": 16}


def _data(root, name):
    return GraphDataModule(
        {"_target_": "diffpool.datasets.load_ogb", "name": name, "root": str(root)},
        split="dataset", node_encoder=ATOMS, edge_encoder=BONDS, batch_size=8,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, task, metric", [("ogbg-molhiv", "binary", "rocauc"), ("ogbg-moltox21", "multilabel",
                                                                  "rocauc"),
                           ("ogbg-molesol", "regression", "rmse")],
)  # fmt: skip
def test_ogb_trains_with_its_split_encoders_and_evaluator(tmp_path, name, task, metric):
    labels = write_ogb_layout(tmp_path, name)
    dm = _data(tmp_path, name)
    dm.setup()
    dataset = dm.dataset.base
    own = dataset.get_idx_split()
    assert torch.equal(dm.split.val, own["valid"]) and torch.equal(dm.split.test, own["test"])
    assert (dm.task.name, dm.task.metric, dm.num_classes) == (task, metric, labels.size(1))
    assert dm.evaluator.eval_metric == metric
    model = {"_target_": "diffpool.models.build_model", "variant": "diffpool", "encoder": "gine",
             "num_levels": 1, "hidden_channels": 16}  # fmt: skip
    module = GraphClassifier(
        model, dm.num_features, dm.num_classes, dm.max_num_nodes, task=dm.task.name,
        metric=dm.task.metric, edge_dim=dm.edge_dim, node_encoder=dm.node_encoder,
        edge_encoder=dm.edge_encoder,
    )  # fmt: skip
    assert module.model.in_channels == 16 and module.model.edge_dim == 16
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert f"test/ogb_{metric}" in tested
    if task != "multilabel":  # one label: OGB's figure is ours (multi-label: OGB skips
        # labels with one class in the test set, torchmetrics counts them)
        assert tested[f"test/ogb_{metric}"] == pytest.approx(tested[f"test/{metric}"], abs=1e-5)


def test_ogb_data_that_is_not_there(tmp_path):
    # OGB's zip of ogbg-molhiv is hiv.zip, holding hiv/ (OGB renames it ogbg_molhiv/)
    url = "http://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/hiv.zip"
    where = re.escape(f"unzip OGB's hiv.zip ({url}) and move its hiv/ folder")
    with pytest.raises(DataUnavailableError, match=where + r".* to .*ogbg_molhiv, or pass"):
        load_ogb("ogbg-molhiv", tmp_path)
    folder = tmp_path / "ogbg_molhiv" / "raw"
    folder.mkdir(parents=True)
    with pytest.raises(DataUnavailableError, match="no RELEASE_v"):
        load_ogb("ogbg-molhiv", tmp_path)
    with pytest.raises(ValueError, match="not an OGB graph-property dataset"):
        load_ogb("ogbn-arxiv", tmp_path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("file", ["geometric_data_processed.pt", "pre_filter.pt"])
def test_a_processed_file_that_names_code_is_refused(tmp_path, monkeypatch, file):
    """OGB unpickles its processed file when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set, PyG its
    pre_transform.pt / pre_filter.pt always: they are checked first."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    write_ogb_layout(tmp_path)
    load_ogb("ogbg-molhiv", tmp_path)
    marker = tmp_path / "MARKER"
    processed = tmp_path / "ogbg_molhiv" / "processed"
    torch.save((_Payload(marker), None), processed / file)
    with pytest.raises(ValueError, match=f"{file} names .*remove {processed}"):
        load_ogb("ogbg-molhiv", tmp_path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="must be a local folder"):
        load_ogb("ogbg-molhiv", "http://127.0.0.1:9/OGB")


def test_the_folder_ogb_reads_is_the_one_checked(tmp_path, monkeypatch):
    """OGB reads ``root/<name>_pyg`` whenever that exists (an earlier download's folder): its
    processed files were read unchecked, ``<name>/processed`` checked in their stead."""
    import shutil

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    write_ogb_layout(tmp_path)
    marker, earlier = tmp_path / "MARKER", tmp_path / "ogbg_molhiv_pyg"
    shutil.copytree(tmp_path / "ogbg_molhiv", earlier)
    (earlier / "processed").mkdir()
    torch.save(_Payload(marker), earlier / "processed" / "pre_transform.pt")
    with pytest.raises(ValueError, match=f"{earlier}/processed/pre_transform.pt names"):
        load_ogb("ogbg-molhiv", tmp_path)
    assert not marker.exists()
    (earlier / "processed" / "pre_transform.pt").unlink()
    dataset = load_ogb("ogbg-molhiv", tmp_path)
    assert dataset.root == str(earlier) and (earlier / "processed").is_dir()
    assert not (tmp_path / "ogbg_molhiv" / "processed").exists()


def test_the_split_is_read_as_data(tmp_path, monkeypatch):
    """OGB's ``get_idx_split()`` loads ``split/<type>/split_dict.pt`` with a plain
    ``torch.load`` (which unpickles with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD): such a file is
    refused when the dataset is loaded, and the dataset's ``get_idx_split()`` loads it
    weights-only (one put there later runs nothing); the CSV split reads as OGB reads it."""
    from ogb.graphproppred import PygGraphPropPredDataset

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    write_ogb_layout(tmp_path)
    marker, split = tmp_path / "MARKER", tmp_path / "ogbg_molhiv" / "split" / "scaffold"
    dataset = load_ogb("ogbg-molhiv", tmp_path)
    ours, theirs = dataset.get_idx_split(), PygGraphPropPredDataset.get_idx_split(dataset)
    assert ours.keys() == theirs.keys() == {"train", "valid", "test"}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    torch.save(_Payload(marker), split / "split_dict.pt")
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        dataset.get_idx_split()
    with pytest.raises(ValueError, match=f"{split}/split_dict.pt names .*restore"):
        load_ogb("ogbg-molhiv", tmp_path)
    assert not marker.exists()
    torch.save({k: v[:3] for k, v in theirs.items()}, split / "split_dict.pt")
    parts = load_ogb("ogbg-molhiv", tmp_path).get_idx_split()
    assert all(torch.equal(parts[k], theirs[k][:3]) for k in parts)


@pytest.mark.parametrize(
    "link", ["ogbg_molhiv", "ogbg_molhiv_pyg", "ogbg_molhiv/processed", "ogbg_molhiv/raw"]
)
def test_a_link_in_the_dataset_folder_is_refused(tmp_path, link):
    """OGB and PyG write into and remove the dataset's folders: a link is an error that
    names it, and nothing is written through it."""
    import shutil

    write_ogb_layout(tmp_path / "elsewhere")
    load_ogb("ogbg-molhiv", tmp_path / "elsewhere")  # processed/ too
    real = tmp_path / "elsewhere" / "ogbg_molhiv"
    root = tmp_path / "OGB"
    if link.startswith("ogbg_molhiv/"):
        shutil.copytree(real, root / "ogbg_molhiv", ignore=shutil.ignore_patterns(link[12:]))
        target = real / link[12:]
    else:
        root.mkdir()
        target = real
    before = sorted(p.name for p in real.rglob("*"))
    (root / link).symlink_to(target, target_is_directory=True)
    with pytest.raises(ValueError, match=f"{root / link} is a link"):
        load_ogb("ogbg-molhiv", root)
    assert sorted(p.name for p in real.rglob("*")) == before
