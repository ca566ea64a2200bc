"""TU datasets offline (bundled archives, folders, errors), features, CV splits, the sampler."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from diffpool.datasets import BUNDLED, fold_split, load_tu, stratified_folds
from diffpool.training import GraphBatchSampler, TUDataModule
from helpers import in_time, tu_archive, write_tu


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


def _toy_zip(folder):
    """``folder/TOY.zip``: :func:`write_tu`'s files in the official layout (``TOY/TOY_*.txt``)."""
    write_tu(folder / "files", "TOY", node_labels=True)
    with zipfile.ZipFile(folder / "TOY.zip", "w") as zf:
        for file in (folder / "files").iterdir():
            zf.write(file, f"TOY/{file.name}")


def test_official_archive_in_root_is_used(tmp_path):
    # an archive in the official layout (NAME/NAME_*.txt) of a dataset that does not ship
    _toy_zip(tmp_path / "root")
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


def _mutag_raw(root):
    """A fresh ``root/MUTAG/raw/``: the text files of the bundled archive, not yet processed."""
    raw = root / "MUTAG" / "raw"
    raw.mkdir(parents=True)
    with zipfile.ZipFile(tu_archive("MUTAG")) as zf:
        for member in zf.infolist():
            (raw / member.filename.rpartition("/")[2]).write_bytes(zf.read(member))
    return raw


def test_an_unsorted_graph_indicator_is_refused(tmp_path):
    """Two lines of the graph indicator swapped at the boundary of graphs 1 and 2 (17 nodes):
    not edges moved between graphs without a word, but an error that names the line."""
    indicator = _mutag_raw(tmp_path) / "MUTAG_graph_indicator.txt"
    lines = indicator.read_text().splitlines(keepends=True)
    lines[16], lines[17] = lines[17], lines[16]
    indicator.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"MUTAG_graph_indicator.txt has graph 1 after graph 2 "):
        load_tu("MUTAG", tmp_path)
    assert not (tmp_path / "MUTAG" / "processed").exists()


@pytest.mark.parametrize(
    "graphs, problem",
    [
        ("1 1 1 3 3 4 4 4 4", "has graph 3 after graph 1 at line 4"),  # graph 2 has no nodes
        ("0 0 0 1 1 2 2 2 2", "starts with graph 0"),
    ],
)
def test_graph_indicator_numbers_graphs_from_one_without_gaps(tmp_path, graphs, problem):
    raw = tmp_path / "TOY" / "raw"
    write_tu(raw, "TOY", node_labels=True)
    (raw / "TOY_graph_indicator.txt").write_text("\n".join(graphs.split()) + "\n")
    (raw / "TOY_graph_labels.txt").write_text("1\n2\n1\n" + "2\n" * (graphs[-1] == "4"))
    with pytest.raises(ValueError, match=f"TOY_graph_indicator.txt {problem}"):
        load_tu("TOY", tmp_path)


@pytest.mark.parametrize("node_labels", [True, False])
def test_an_edgeless_one_node_graph_at_the_end_is_kept(tmp_path, node_labels):
    """PyG counts the graphs of its edge slices: a last graph without edges was dropped
    (188 graphs for 189 labels). A graph of one node and no edges is a graph."""
    raw = tmp_path / "TOY" / "raw"
    write_tu(raw, "TOY", node_labels=node_labels)
    for part, line in (("graph_indicator", "4"), ("graph_labels", "2"), ("node_labels", "1")):
        if (raw / f"TOY_{part}.txt").exists():
            with open(raw / f"TOY_{part}.txt", "a") as handle:
                handle.write(f"{line}\n")
    for _ in range(2):  # processed, then read back from processed/
        dataset = load_tu("TOY", tmp_path)
        assert len(dataset) == 4
        last = dataset[3]
        assert (last.num_nodes, last.edge_index.shape, last.y.tolist()) == (1, (2, 0), [1])
        assert dataset[2].num_nodes == 4 and dataset[2].edge_index.size(1) == 6


def test_an_edgeless_graph_at_the_end_of_mutag_is_kept(tmp_path):
    raw = _mutag_raw(tmp_path)
    for part, line in (("graph_indicator", "189"), ("graph_labels", "1"), ("node_labels", "0")):
        with open(raw / f"MUTAG_{part}.txt", "a") as handle:
            handle.write(f"{line}\n")
    dataset = load_tu("MUTAG", tmp_path)
    assert len(dataset) == 189 and dataset[188].num_nodes == 1
    assert dataset[188].edge_index.numel() == 0 and dataset[188].edge_attr.size(0) == 0
    assert torch.equal(dataset[187].edge_index, load_tu("MUTAG", tmp_path / "ok")[187].edge_index)


def _mutag_zip(path, folder: str = "MUTAG//", extra: dict[str, str] | None = None):
    """The bundled MUTAG archive with its files in ``folder`` and the members of ``extra``."""
    with zipfile.ZipFile(tu_archive("MUTAG")) as src, zipfile.ZipFile(path, "w") as dst:
        for member in src.infolist():
            dst.writestr(member.filename.replace("MUTAG//", folder), src.read(member))
        for name, text in (extra or {}).items():
            dst.writestr(name, text)


def test_a_second_member_of_the_same_name_is_an_error(tmp_path):
    """``other/MUTAG_graph_labels.txt`` beside ``MUTAG/MUTAG_graph_labels.txt`` won silently."""
    _mutag_zip(tmp_path / "MUTAG.zip", extra={"other/MUTAG_graph_labels.txt": "1\n" * 188})
    with pytest.raises(
        ValueError,
        match=r"MUTAG.zip has two MUTAG_graph_labels.txt: MUTAG//MUTAG_graph_labels.txt and "
        r"other/MUTAG_graph_labels.txt",
    ):
        load_tu("MUTAG", tmp_path)
    assert not (tmp_path / "MUTAG" / "raw").exists()


def test_only_the_members_in_the_dataset_folder_count(tmp_path):
    """Files elsewhere in the archive (another folder, none) are not the dataset's."""
    for folder in ("other/", "", "MUTAG/MUTAG/"):
        _mutag_zip(tmp_path / "MUTAG.zip", folder)
        with pytest.raises(ValueError, match=r"its folder MUTAG/ lacks MUTAG_A.txt, MUTAG_g"):
            load_tu("MUTAG", tmp_path)
    _mutag_zip(tmp_path / "MUTAG.zip", "MUTAG/", extra={"MUTAG.txt": "", "other/README.txt": ""})
    assert len(load_tu("MUTAG", tmp_path)) == 188


def test_an_unreadable_processed_file_is_rebuilt_from_raw(tmp_path, caplog):
    """A ``processed/data.pt`` cut short (a full disk while it was written) broke the data
    root for good; now it is processed again from raw/, with a warning."""
    first = load_tu("MUTAG", tmp_path)
    data_pt = tmp_path / "MUTAG" / "processed" / "data.pt"
    data_pt.write_bytes(data_pt.read_bytes()[: data_pt.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="diffpool.datasets.tu"):
        again = load_tu("MUTAG", tmp_path)
    assert len(again) == 188 and torch.equal(again._data.x, first._data.x)
    assert f"could not read {data_pt.parent}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="diffpool.datasets.tu"):
        assert len(load_tu("MUTAG", tmp_path)) == 188  # rebuilt for good
    assert not caplog.text


class _Payload:
    """What a crafted processed file holds: an object whose unpickling writes a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


class _Gadget(_Payload):
    """A call of a class PyG allowlists for weights-only loads (ClusterData loads a path,
    unpickling it where a weights-only load fails)."""

    def __reduce__(self):
        from torch_geometric.loader import ClusterData

        return (ClusterData, (None, 2, False, "", str(self.marker)))


@pytest.mark.parametrize("payload", [_Payload, _Gadget])
@pytest.mark.parametrize("file", ["data.pt", "pre_transform.pt", "pre_filter.pt"])
def test_a_processed_file_that_names_code_is_never_unpickled(
    tmp_path, caplog, monkeypatch, file, payload
):
    """PyG unpickles pre_transform.pt and pre_filter.pt, and data.pt where a weights-only load
    fails; the processed files are checked first, so a crafted one is rebuilt from raw/ and
    runs nothing (even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    load_tu("MUTAG", tmp_path)
    marker = tmp_path / "MARKER"
    torch.save((payload(marker), None, None, None), tmp_path / "MUTAG" / "processed" / file)
    with caplog.at_level("WARNING", logger="diffpool.datasets.tu"):
        again = load_tu("MUTAG", tmp_path)
    assert len(again) == 188 and not marker.exists()
    assert "weights-only load refuses" in caplog.text


def test_a_url_is_not_a_data_root(tmp_path):
    with pytest.raises(ValueError, match="must be a local folder"):
        load_tu("MUTAG", "http://127.0.0.1:9/TU")


@pytest.mark.parametrize(
    "part", ["A", "graph_indicator", "graph_labels", "node_labels", "edge_labels"]
)
def test_an_empty_tu_file_is_named(tmp_path, part):
    (_mutag_raw(tmp_path) / f"MUTAG_{part}.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=f"MUTAG_{part}.txt is empty; remove "):
        load_tu("MUTAG", tmp_path)


@pytest.mark.parametrize("name", ["../../../escape/X", "a/b", "..", "a\\b", ".hidden", ""])
def test_a_name_that_is_not_plain_is_refused_before_anything_is_made(tmp_path, name):
    root = tmp_path / "a" / "b" / "TU"
    with pytest.raises(ValueError, match="is not a dataset name"):
        load_tu(name, root, download=True)
    with pytest.raises(ValueError, match="is not a dataset name"):
        TUDataModule(name, root=root, download=True).setup()
    assert not list(tmp_path.iterdir())


def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    from torch_geometric.datasets import TUDataset

    from diffpool.datasets import DataUnavailableError

    monkeypatch.setattr(TUDataset, "url", "http://127.0.0.1:9")  # no server: refused
    root = tmp_path / "TU"
    for _ in range(2):
        with pytest.raises(DataUnavailableError, match=r"put the official NCI1.zip in .*TU"):
            load_tu("NCI1", root, download=True)
        assert not root.exists()
    (root / "NCI1" / "raw").mkdir(parents=True)  # an incomplete copy stays as it was
    with pytest.raises(DataUnavailableError, match="could not download"):
        load_tu("NCI1", root, download=True)
    assert sorted(p.name for p in root.rglob("*")) == ["NCI1", "raw"]


def test_a_download_is_kept_as_the_archive_and_a_page_that_is_no_zip_is_refused(
    tmp_path, monkeypatch
):
    import functools
    import http.server
    import threading

    from torch_geometric.datasets import TUDataset

    from diffpool.datasets import DataUnavailableError

    _toy_zip(tmp_path / "site")
    (tmp_path / "site" / "PAGE.zip").write_text("<html>please log in</html>")
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site")
    )
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setattr(TUDataset, "url", f"http://127.0.0.1:{server.server_port}")
        root = tmp_path / "TU"
        assert len(load_tu("TOY", root, download=True)) == 3
        with pytest.raises(DataUnavailableError, match="PAGE.zip gave no zip archive"):
            load_tu("PAGE", root, download=True)
        server.shutdown()
    # the archive and the dataset; the lock file went when the dataset was ready
    assert sorted(p.name for p in root.iterdir()) == ["TOY", "TOY.zip"]
    assert len(load_tu("TOY", root)) == 3  # offline from now on


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("link", ["MUTAG", "MUTAG/raw", "MUTAG/processed"])
def test_a_link_in_the_dataset_folder_is_refused_and_nothing_is_done_through_it(
    tmp_path, monkeypatch, link
):
    """Through a link ``root/MUTAG`` the folder it points to lost its raw/ and processed/ and
    got MUTAG's files; through a link ``processed/`` to a folder holding only a crafted
    ``pre_transform.pt`` PyG unpickled it (the folder was neither checked, having no data.pt,
    nor removed, rmtree refusing links silently) and wrote data.pt there. A relative link
    ships in a tarball. Now each is an error that names the link, and nothing is read or
    written through it."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, root, elsewhere = tmp_path / "MARKER", tmp_path / "TU", tmp_path / "elsewhere"
    for sub in ("raw", "processed"):
        (elsewhere / sub).mkdir(parents=True)
        (elsewhere / sub / "mine.txt").write_text("mine")
    torch.save(_Payload(marker), elsewhere / "pre_transform.pt")
    if link != "MUTAG":
        _mutag_raw(root)
        if link == "MUTAG/raw":
            import shutil

            shutil.rmtree(root / link)
    path = root / link
    path.parent.mkdir(parents=True, exist_ok=True)
    before = _tree(elsewhere)
    path.symlink_to(Path("../" * link.count("/") + "../elsewhere"), target_is_directory=True)
    with pytest.raises(ValueError, match=f"{path} is a link .*replace the link with a copy"):
        load_tu("MUTAG", root)
    assert _tree(elsewhere) == before and not marker.exists()
    assert path.is_symlink()


def test_a_processed_folder_is_checked_without_data_pt_and_must_go(tmp_path, monkeypatch):
    """A ``processed/`` without ``data.pt`` (cut short, or crafted) is checked and removed
    before PyG processes into it (PyG unpickles its pre_transform.pt first); where it cannot
    be removed, loading fails with the folder named (it was left silently, and read)."""
    import shutil

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, processed = tmp_path / "MARKER", tmp_path / "MUTAG" / "processed"
    _mutag_raw(tmp_path)
    processed.mkdir()
    torch.save(_Payload(marker), processed / "pre_transform.pt")
    rmtree = shutil.rmtree

    def stuck(path, *args, **kwargs):  # a folder that cannot be removed (root ignores modes)
        if Path(path) == processed:
            if kwargs.get("ignore_errors"):
                return None
            raise PermissionError(13, "Permission denied", str(path))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", stuck)
    with pytest.raises(PermissionError, match=f"could not remove {processed}"):
        load_tu("MUTAG", tmp_path)
    assert not marker.exists()
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert len(load_tu("MUTAG", tmp_path)) == 188 and not marker.exists()
    assert torch.load(processed / "pre_transform.pt", weights_only=True) == "None"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize("where", ["MUTAG.zip", "MUTAG/processed/pre_filter.pt"])
def test_a_pipe_in_place_of_a_dataset_file_is_not_waited_on(tmp_path, where):
    """A named pipe as ``NAME.zip`` or as a processed file (a tarball can hold one): opening
    it waited for a writer for ever. Now the archive is an error and the processed folder is
    rebuilt."""
    import os

    if where.startswith("MUTAG/"):
        load_tu("MUTAG", tmp_path)
        (tmp_path / where).unlink()
    os.mkfifo(tmp_path / where)
    if where == "MUTAG.zip":
        with pytest.raises(ValueError, match="MUTAG.zip is not a regular file"):
            in_time(lambda: load_tu("MUTAG", tmp_path), tmp_path / where)
    else:
        assert len(in_time(lambda: load_tu("MUTAG", tmp_path), tmp_path / where)) == 188
        assert (tmp_path / where).is_file()


def test_a_link_in_place_of_the_lock_file_is_refused(tmp_path):
    """The lock ``root/.NAME.lock`` is opened (and made): through a link, a file elsewhere."""
    (tmp_path / ".MUTAG.lock").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(ValueError, match=r"\.MUTAG\.lock is a link"):
        load_tu("MUTAG", tmp_path)
    assert not (tmp_path / "elsewhere.txt").exists()
