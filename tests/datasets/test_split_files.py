"""Published split files: Errica et al.'s layout and a plain train/val/test object, and the
errors that name the file and the fold."""

from __future__ import annotations

import json

import pytest
import torch

from diffpool.datasets import load_split_file


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
