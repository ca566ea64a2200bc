"""What a run leaves behind: reading and writing results.json and failed.json."""

from __future__ import annotations

import errno
import json
import math
import os

import pytest
from omegaconf import OmegaConf

from diffpool.training.report import Group
from diffpool.training.results import FairResult, RunFailure, RunResult, best_epoch


def _result() -> RunResult:
    return RunResult(
        dataset="MUTAG", fold=0, num_folds=10, model="diffpool", epochs=2,
        fair=FairResult(best_epoch=1, val=0.5, test=0.75, checkpoint="best-epoch001.ckpt"),
        test_curve=[0.5, 0.75], val_curve=[0.25, 0.5], wall_time_s=1.5, config={"seed": 0},
    )  # fmt: skip


def _with(**changes) -> dict:
    payload = _result().to_json()
    for key, value in changes.items():
        if "__" in key:  # fair__best_epoch: an entry of fair
            outer, inner = key.split("__")
            payload[outer] = {**payload[outer], inner: value}
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize(
    "text, message",
    [
        ("{}", "missing dataset, fold, num_folds, model, epochs, fair, test_curve, val_curve"),
        ("[1, 2]", "the top level must be a JSON object, got [1, 2]"),
        ("{not json", "is not valid JSON"),
        (json.dumps(_with(fold="three")), "fold must be int, got 'three'"),
        (json.dumps(_with(epochs=True)), "epochs must be int, got True"),
        (json.dumps(_with(fair=3)), "fair must be a JSON object, got 3"),
        (json.dumps(_with(fair__best_epoch=None)), "fair.best_epoch must be int, got None"),
        (json.dumps(_with(test_curve=["a"])), "test_curve must be list[float], got ['a']"),
        (json.dumps(_with(config=None)), "config must be dict[str, Any], got None"),
        (json.dumps(_with(schema="2")), "schema must be int, got '2'"),
        (json.dumps(_with(schema=1)), "results of schema 1 are not those of this diffpool"),
        (json.dumps(_with(schema=3)), "results of schema 3 are not those of this diffpool"),
        # text that the run's summary writes into log lines: no forged lines
        (json.dumps(_with(metric="acc\ntouch /tmp/x #")), "metric must be a metric name"),
        (json.dumps(_with(ogb={"rocauc\x1b[2J": 0.5})), "a key of ogb must be a metric name"),
    ],
)
def test_a_malformed_results_json_is_an_error_that_names_the_file_and_the_fault(
    tmp_path, text, message
):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError) as err:
        RunResult.load(tmp_path)
    assert str(tmp_path / "results.json") in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("kind", ["pipe", "device", "folder"])
def test_a_results_json_that_is_no_regular_file_is_refused_unread(tmp_path, kind):
    """A pipe would be waited on for ever, a device (/dev/zero) read until the memory is
    gone: they are refused by what they are, before anything is read."""
    if kind != "folder" and not (hasattr(os, "mkfifo") and os.path.exists("/dev/zero")):
        pytest.skip("needs pipes and /dev/zero (POSIX)")
    path = tmp_path / "results.json"
    if kind == "pipe":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    with pytest.raises(ValueError, match=rf"results file {path} is not a regular file"):
        RunResult.load(tmp_path)


def test_a_results_json_round_trips_and_its_numbers_may_be_integers(tmp_path):
    result = _result()
    result.save(tmp_path)
    assert RunResult.load(tmp_path) == result
    (tmp_path / "results.json").write_text(json.dumps(_with(wall_time_s=2, fair__val=1)))
    assert RunResult.load(tmp_path).wall_time_s == 2


def test_the_optimized_metric_is_an_entry_of_results_json_or_a_named_error(caplog):
    """``optimized_metric`` is what a sweeper optimises: a typo was None without a word."""
    from diffpool.cli.train import run

    result = _result()
    assert result.lookup("fair.val") == result.fair.val
    with pytest.raises(KeyError, match=r"no entry 'fair.vall' \(fair has .*val"):
        result.lookup("fair.vall")

    class Done:  # train() of a finished run
        def __call__(self, cfg):
            return result

    import diffpool.training.run as run_module

    cfg = OmegaConf.create({"optimized_metric": "fair.vall"})
    with pytest.MonkeyPatch.context() as patch, caplog.at_level("ERROR"):
        patch.setattr(run_module, "train", Done())
        assert run(cfg) is None
    assert "optimized_metric=fair.vall: results.json has no entry" in caplog.text


@pytest.mark.parametrize("metric", ["fair.test", "test_curve", "ogb.test_rocauc"])
def test_no_sweep_optimises_a_test_fold_metric(metric):
    """A sweeper that optimises a metric of the test fold chooses hyperparameters on the test
    set: refused before anything trains."""
    import diffpool.training.run as run_module
    from diffpool.cli.train import run

    def train(cfg):
        raise AssertionError("trained")

    cfg = OmegaConf.create({"optimized_metric": metric})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "train", train)
        with pytest.raises(ValueError, match=rf"optimized_metric={metric} is measured on the test"):
            run(cfg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{}", "missing error"),
        ('{"error": 3}', "error must be str, got 3"),
        ('{"error": "boom", "config": []}', "config must be dict[str, Any], got []"),
        ('"boom"', "the top level must be a JSON object"),
        ("", "is not valid JSON"),
    ],
)
def test_a_malformed_failed_json_is_an_error_that_names_the_file_and_the_fault(
    tmp_path, text, message
):
    (tmp_path / "failed.json").write_text(text)
    with pytest.raises(ValueError) as err:
        RunFailure.load(tmp_path)
    assert str(tmp_path / "failed.json") in str(err.value) and message in str(err.value)


def test_a_full_disk_leaves_no_partial_failed_json(tmp_path, monkeypatch):
    """Writing failed.json stops halfway (no space left): neither its temporary file nor a
    half-written failed.json remains, and an earlier failed.json is left as it was."""
    RunFailure(error="ValueError: earlier").save(tmp_path)
    before = (tmp_path / "failed.json").read_text()

    def disk_full(fd):  # what was written does not fit on the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        RunFailure(error="ValueError: boom", traceback="x" * 1000).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed.json"]
    assert (tmp_path / "failed.json").read_text() == before


@pytest.mark.parametrize(
    ("curve", "higher", "epoch"),
    [
        ([0.5, 0.75, 0.75, 0.25], True, 1),  # the first of equal bests, as ModelCheckpoint
        ([0.5, 0.75, 0.75, 0.25], False, 3),
        ([math.nan, 0.5, math.nan], True, 1),
        ([math.nan, math.nan], True, -1),
        ([], True, -1),
    ],
)
def test_the_best_epoch_is_the_first_best_value(curve, higher, epoch):
    assert best_epoch(curve, higher) == epoch


def test_the_paper_protocol_of_folds_without_a_test_value_is_nan():
    """The mean test-fold curve of a group holds no value: no epoch, NaN (numpy's argmax of
    an all-NaN curve raised)."""
    runs = [
        RunResult(**{**_result().__dict__, "fold": fold, "test_curve": [math.nan, math.nan]})
        for fold in (0, 1)
    ]
    mean, std, epoch = Group({}, runs=runs).paper()
    assert math.isnan(mean) and math.isnan(std) and epoch == -1
    runs[1].test_curve = [0.75, 0.25]
    assert Group({}, runs=runs).paper() == (0.75, 0.0, 0)
