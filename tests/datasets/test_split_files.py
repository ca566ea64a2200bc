"""Published split files: Errica et al.'s layout and a plain train/val/test object, and the
errors that name the file and the fold."""

from __future__ import annotations

import json

import pytest
import torch

from diffpool.datasets import load_split_file
from helpers import in_time


def _errica(path, folds):
    path.write_text(json.dumps(folds))
    return path


def test_errica_layout_reads_each_fold_and_model_selection_split(tmp_path):
    folds = [
        {"test": [0, 1], "model_selection": [{"train": [2, 3, 4], "validation": [5]},
                                             {"train": [3, 4, 5], "validation": [2]}]},
        {"test": [2, 3], "model_selection": [{"train": [0, 1, 4], "validation": [5]}]},
    ]  # fmt: skip
    file = _errica(tmp_path / "splits.json", folds)
    split = load_split_file(file, num_graphs=6, fold=0, inner=1)
    assert split.train.tolist() == [3, 4, 5] and split.val.tolist() == [2]
    assert split.test.tolist() == [0, 1]
    assert load_split_file(file, 6, fold=1).test.tolist() == [2, 3]


def test_plain_object_with_val_or_validation(tmp_path):
    file = tmp_path / "split.json"
    file.write_text(json.dumps({"train": [3, 0, 1], "validation": [2], "test": [4]}))
    split = load_split_file(file, 5)
    assert torch.equal(split.train, torch.tensor([0, 1, 3])) and split.val.tolist() == [2]
    with pytest.raises(ValueError, match="holds one split, not folds: fold must be 0"):
        load_split_file(file, 5, fold=1)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": [0, 1], "val": [2], "test": [9]}, r"fold 0: test names graph 9, outside"),
        ({"train": [0, 1], "val": [2], "test": [1]}, r"1 graphs are in both train and test"),
        ({"train": [0, 1], "val": [], "test": []}, r"fold 0: the test set is empty"),
        ({"train": [0, 1], "val": [1], "test": [3]}, r"in both train and val"),
        ({"train": [0], "test": [1]}, r"object has keys \['test', 'train'\]"),
        ([], r"expected a list of folds"),
        # entries a tensor would take for other graphs, or that fail deep inside
        ({"train": [2.7, 3.2], "val": [], "test": [0]}, r"train must be a list of graph indices"),
        ({"train": [True], "val": [], "test": [0]}, r"train must be a list of graph indices"),
        ({"train": [[2, 3], [4]], "val": [], "test": [0]}, r"train must be a list of graph"),
        ({"train": "01", "val": [], "test": [0]}, r"train must be a list of graph indices"),
        ({"train": [10**30], "val": [], "test": [0]}, r"train names a graph past int64"),
        ([{"test": [0], "model_selection": [{}]}], r"model-selection split 0 must be an object"),
        ([{"test": [0], "model_selection": [[2, 3]]}], r"model-selection split 0 must be an"),
    ],
)
def test_bad_splits_name_the_file_and_the_fold(tmp_path, content, message):
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as info:
        load_split_file(file, 5)
    assert "bad.json" in str(info.value)


def test_missing_file_and_fold_out_of_range(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file .*nope.json not found"):
        load_split_file(tmp_path / "nope.json", 5)
    file = _errica(tmp_path / "s.json", [{"test": [0], "model_selection": [
        {"train": [1], "validation": [2]}]}])  # fmt: skip
    with pytest.raises(ValueError, match="has 1 folds: fold must be in"):
        load_split_file(file, 5, fold=3)


def test_a_split_file_is_a_regular_file_under_the_cap(tmp_path):
    """A run's results.json names its split file: ``/dev/zero`` filled the memory, a named
    pipe waited for ever, a huge file was read whole. Now each is an error that names the
    file (and the cap)."""
    import os

    from diffpool.datasets.splits import MAX_SPLIT_FILE_BYTES, split_file_folds

    assert MAX_SPLIT_FILE_BYTES == 64 * 2**20
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="split file /dev/zero is not a regular file .*64 MiB"):
            load_split_file("/dev/zero", 5)
    with pytest.raises(ValueError, match=f"split file {tmp_path} is not a regular file"):
        split_file_folds(tmp_path)
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:  # sparse: nothing is written
        handle.truncate(MAX_SPLIT_FILE_BYTES + 1)
    with pytest.raises(ValueError, match=r"big.json has 67108865 bytes, more than the 64 MiB"):
        load_split_file(big, 5)
    if hasattr(os, "mkfifo"):
        pipe = tmp_path / "pipe.json"
        os.mkfifo(pipe)
        with pytest.raises(ValueError, match="pipe.json is not a regular file"):
            in_time(lambda: load_split_file(pipe, 5), pipe)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deep.json is not valid JSON"):
        load_split_file(deep, 5)
    link = tmp_path / "link.json"  # a link to a regular file is read as the file
    link.symlink_to(_errica(tmp_path / "s.json", [{"test": [0], "model_selection": [
        {"train": [1], "validation": [2]}]}]))  # fmt: skip
    assert load_split_file(link, 5).test.tolist() == [0]
