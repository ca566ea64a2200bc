"""TU datasets offline (bundled archives, folders, errors), features, CV splits, the sampler."""

from __future__ import annotations

import zipfile

import pytest
import torch

from diffpool.datasets import BUNDLED, fold_split, load_tu, stratified_folds
from diffpool.training import GraphBatchSampler, TUDataModule
from helpers import tu_archive, write_tu


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_datasets_load_with_no_files_around(tmp_path, name):
    dataset = load_tu(name, tmp_path / "TU")  # node_features="auto": all they have
    expected = {"ENZYMES": (600, 6, 21), "PROTEINS": (1113, 2, 4), "MUTAG": (188, 2, 7)}[name]
    assert (len(dataset), dataset.num_classes, dataset.num_features) == expected
    assert (tmp_path / "TU" / name / "raw" / f"{name}_A.txt").exists()


def test_node_feature_choices_on_enzymes(tmp_path):
    sizes = {
        features: load_tu("ENZYMES", tmp_path, node_features=features).num_features
        for features in ("labels", "attributes", "both")
    }
    assert sizes == {"labels": 3, "attributes": 18, "both": 21}
    both = load_tu("ENZYMES", tmp_path, node_features="both")[0].x
    labels = load_tu("ENZYMES", tmp_path, node_features="labels")[0].x
    assert torch.equal(both[:, 18:], labels)
    assert torch.equal(labels.sum(-1), torch.ones(labels.size(0)))  # one-hot


def test_auto_features_take_what_the_dataset_has_and_say_so(tmp_path, caplog):
    with caplog.at_level("INFO", logger="diffpool.datasets.tu"):
        assert load_tu("MUTAG", tmp_path).num_features == 7
        assert load_tu("ENZYMES", tmp_path).num_features == 21
    assert "MUTAG node features: labels (0 node attributes, 7 one-hot node labels" in caplog.text
    assert "ENZYMES node features: both (18 node attributes, 3" in caplog.text


def test_missing_features_are_explicit_errors(tmp_path):
    with pytest.raises(ValueError, match="MUTAG has no node attributes"):
        load_tu("MUTAG", tmp_path, node_features="attributes")
    # an explicit `both` on a dataset with labels only is refused, not silently labels
    with pytest.raises(ValueError, match="MUTAG has no node attributes: node_features='both'"):
        load_tu("MUTAG", tmp_path, node_features="both")
    with pytest.raises(ValueError, match="node_features must be one of"):
        load_tu("MUTAG", tmp_path, node_features="colours")


def test_official_archive_in_root_is_used(tmp_path):
    # an archive in the official layout (NAME/NAME_*.txt) of a dataset that does not ship
    write_tu(tmp_path / "files", "TOY", node_labels=True)
    (tmp_path / "root").mkdir()
    with zipfile.ZipFile(tmp_path / "root" / "TOY.zip", "w") as zf:
        for file in (tmp_path / "files").iterdir():
            zf.write(file, f"TOY/{file.name}")
    assert len(load_tu("TOY", tmp_path / "root")) == 3
    assert (tmp_path / "root" / "TOY" / "raw" / "TOY_A.txt").exists()
    # and the bundled ones read the same from a copy of their archive in root
    (tmp_path / "MUTAG.zip").write_bytes(tu_archive("MUTAG").read_bytes())
    assert len(load_tu("MUTAG", tmp_path)) == 188


def test_raw_folder_without_features_gets_degree_or_constant(tmp_path):
    write_tu(tmp_path / "TOY" / "raw", "TOY", node_labels=False)
    dataset = load_tu("TOY", tmp_path)
    star = dataset[2]
    assert star.x.shape == (4, 65)
    assert star.x.argmax(-1).tolist() == [3, 1, 1, 1]
    const = load_tu("TOY", tmp_path, fallback_features="constant")
    assert torch.equal(const[0].x, torch.ones(3, 1))


def test_raw_folder_with_labels(tmp_path):
    write_tu(tmp_path / "TOY" / "raw", "TOY", node_labels=True)
    dataset = load_tu("TOY", tmp_path)
    assert dataset.num_features == 3
    assert dataset[0].x.argmax(-1).tolist() == [0, 1, 0]


def test_unknown_name_suggests_and_missing_offline_copy_says_where(tmp_path):
    root = tmp_path / "TU"
    with pytest.raises(ValueError, match=r"Did you mean ENZYMES\? \(data.download"):
        load_tu("ENZYMS", root)  # once: ENZYMES is both bundled and known
    with pytest.raises(FileNotFoundError, match="put the official NCI1.zip in"):
        load_tu("NCI1", root)
    with pytest.raises(FileNotFoundError, match="'NCI1' is not available offline"):
        load_tu("nci1", root)  # any case
    assert not root.exists()  # a name that is no dataset leaves no folder or lock behind


def test_names_match_without_regard_to_case(tmp_path, caplog):
    with caplog.at_level("INFO", logger="diffpool.datasets.tu"):
        assert load_tu("mutag", tmp_path).name == "MUTAG"  # bundled
    assert "TU dataset 'mutag' is MUTAG" in caplog.text
    write_tu(tmp_path / "Toy" / "raw", "Toy", node_labels=True)  # an offline copy
    assert load_tu("TOY", tmp_path).name == "Toy"
    dm = TUDataModule("proteins", root=tmp_path)
    dm.setup()
    assert dm.name == "PROTEINS"


def test_corrupt_and_wrong_archives_are_named(tmp_path):
    (tmp_path / "NCI1.zip").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="NCI1.zip is not a readable zip archive"):
        load_tu("NCI1", tmp_path)
    with zipfile.ZipFile(tmp_path / "DD.zip", "w") as zf:
        zf.writestr("DD/README.txt", "nothing else")
    with pytest.raises(ValueError, match="lacks DD_A.txt"):
        load_tu("DD", tmp_path)


def test_stratified_folds_partition_the_data_with_class_balance():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    folds = stratified_folds(labels, 10, seed=3)
    everything = torch.cat(folds).sort().values
    assert torch.equal(everything, torch.arange(100))
    for fold in folds:
        assert fold.numel() == 10
        assert torch.bincount(labels[fold], minlength=3).tolist() == [5, 3, 2]
    assert all(torch.equal(a, b) for a, b in zip(folds, stratified_folds(labels, 10, seed=3)))
    assert not all(torch.equal(a, b) for a, b in zip(folds, stratified_folds(labels, 10, 4)))


def test_fold_split_is_disjoint_and_covers():
    labels = torch.tensor([0, 1] * 60)
    seen_test = []
    for fold in range(10):
        split = fold_split(labels, fold, 10, seed=0, val_ratio=0.1)
        parts = [split.train, split.val, split.test]
        joined = torch.cat(parts)
        assert joined.unique().numel() == joined.numel() == 120
        assert split.val.numel() == 11 or split.val.numel() == 10
        seen_test.append(split.test)
    assert torch.equal(torch.cat(seen_test).sort().values, torch.arange(120))
    with pytest.raises(ValueError, match="fold must be in"):
        fold_split(labels, 10)


def test_val_ratio_zero_trains_on_every_other_fold(tmp_path):
    """The authors' split: no validation set, the 9 other folds train; the data module then
    offers the test fold alone for validation, named by ``val_stages``."""
    labels = torch.tensor([0, 1] * 60)
    split = fold_split(labels, 3, 10, seed=0, val_ratio=0.0)
    with_val = fold_split(labels, 3, 10, seed=0, val_ratio=0.1)
    assert split.val.numel() == 0 and torch.equal(split.test, with_val.test)
    assert torch.equal(split.train, torch.cat([with_val.train, with_val.val]).sort().values)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\), got 1.0"):
        fold_split(labels, 0, 10, val_ratio=1.0)
    dm = TUDataModule("MUTAG", root=tmp_path, val_ratio=0.0, batch_size=50)
    dm.setup()
    assert dm.val_stages == ("heldout",)
    (loader,) = dm.val_dataloader()
    assert sorted(i for b in loader for i in b.graph_id.tolist()) == dm.split.test.tolist()
    assert TUDataModule("MUTAG", root=tmp_path).val_stages == ("val", "heldout")
    with pytest.raises(ValueError, match="val_ratio must be in"):
        TUDataModule("MUTAG", root=tmp_path, val_ratio=-0.1)


@pytest.mark.parametrize("num_graphs", [1, 7, 40, 41, 99])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 20])
def test_batch_sampler_sees_every_graph_once_on_equal_steps(num_graphs, world, batch_size):
    if num_graphs < world:
        with pytest.raises(ValueError, match="cannot feed"):
            GraphBatchSampler(num_graphs, batch_size, num_replicas=world)
        return
    samplers = [
        GraphBatchSampler(num_graphs, batch_size, True, seed=1, num_replicas=world, rank=r)
        for r in range(world)
    ]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        batches = [list(s) for s in samplers]
        assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(samplers[0])
        assert all(len(batch) >= 1 for rank in batches for batch in rank)
        seen = sorted(i for rank in batches for batch in rank for i in batch)
        assert seen == list(range(num_graphs))
    order = [list(s) for s in samplers]
    samplers[0].set_epoch(0)
    assert list(samplers[0]) != order[0] or num_graphs <= world


def test_data_module_batches_carry_graph_ids(tmp_path):
    dm = TUDataModule("MUTAG", root=tmp_path, fold=2, batch_size=16)
    dm.setup()
    assert (dm.num_features, dm.num_classes, dm.max_num_nodes) == (7, 2, 28)
    ids = torch.cat([b.graph_id for b in dm.train_dataloader()]).sort().values
    assert torch.equal(ids, dm.split.train)
    val, test = dm.val_dataloader()
    assert torch.equal(torch.cat([b.graph_id for b in test]).sort().values, dm.split.test)
    assert torch.equal(torch.cat([b.graph_id for b in val]).sort().values, dm.split.val)
    batch = next(iter(dm.test_dataloader()))
    assert torch.equal(batch.y, dm.dataset.base.y[batch.graph_id])


def _bundled_zip(name: str) -> bytes:
    from importlib import resources

    return (resources.files("diffpool.datasets") / "archives" / f"{name}.zip").read_bytes()


def test_a_corrupt_archive_names_itself_and_leaves_no_partial_raw_folder(tmp_path):
    """Bytes flipped inside a member's compressed data: an error naming the archive, and no
    half-extracted raw/ for the next run to train on (with other features) without a word."""
    import io
    import zipfile

    data = bytearray(_bundled_zip("MUTAG"))
    archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = next(i for i in archive.infolist() if i.filename.endswith("_node_labels.txt"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 20
    for i in range(start, start + 40):
        data[i] ^= 0xFF
    (tmp_path / "MUTAG.zip").write_bytes(bytes(data))
    for _ in range(2):  # the second run fails the same way
        with pytest.raises(ValueError, match=r"MUTAG.zip is not a readable zip archive"):
            load_tu("MUTAG", tmp_path)
        assert not (tmp_path / "MUTAG" / "raw").exists()
        assert not list((tmp_path / "MUTAG").glob(".raw.partial-*"))


def test_tu_files_that_disagree_name_the_short_file(tmp_path):
    """A damaged raw/ with 10 graph labels missing: not 178 graphs trained silently, but an
    error that says which file is short."""
    load_tu("MUTAG", tmp_path)  # extract, then damage a fresh copy
    raw = tmp_path / "copy" / "MUTAG" / "raw"
    raw.mkdir(parents=True)
    for f in (tmp_path / "MUTAG" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    labels = raw / "MUTAG_graph_labels.txt"
    labels.write_text("\n".join(labels.read_text().split()[:178]) + "\n")
    with pytest.raises(ValueError, match=r"MUTAG_graph_labels.txt has 178 lines for 188 graphs"):
        load_tu("MUTAG", tmp_path / "copy")
    node_labels = raw / "MUTAG_node_labels.txt"
    labels.write_bytes((tmp_path / "MUTAG" / "raw" / "MUTAG_graph_labels.txt").read_bytes())
    node_labels.write_text("\n".join(node_labels.read_text().split()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"MUTAG_node_labels.txt has 3370 lines for 3371 nodes"):
        load_tu("MUTAG", tmp_path / "copy")
