"""``diffpool-predict``'s options: a bad one is an error that names it and what it takes."""

from __future__ import annotations

import json

import pytest

from diffpool.cli.predict import main


@pytest.mark.parametrize(
    "option, message",
    [
        ("split=bogus", "split must be one of test, val, train, all, got 'bogus'"),
        ("threads=abc", "threads must be a whole number >= 0 (0: torch's default), got 'abc'"),
        ("threads=-1", "threads must be a whole number >= 0 (0: torch's default), got '-1'"),
        ("batch_size=0", "batch_size must be a whole number >= 1, got '0'"),
        ("batch_size=1.5", "batch_size must be a whole number >= 1, got '1.5'"),
        ("assignments=yes", "assignments must be true or false, got 'yes'"),
    ],
)
def test_a_bad_option_is_a_usage_error_that_names_it_and_its_values(
    tmp_path, capsys, option, message
):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), option])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"diffpool-predict: error: {message}\n" in err and "Traceback" not in err


def test_an_unknown_data_config_names_the_options(tmp_path, capsys):
    (tmp_path / "results.json").write_text(
        json.dumps(
            {"dataset": "MUTAG", "fold": 0, "num_folds": 10, "model": "diffpool", "epochs": 1,
             "fair": {}, "test_curve": [0.5], "val_curve": [0.5], "wall_time_s": 1.0,
             "config": {"seed": 0}, "schema": 2}
        )
    )  # fmt: skip
    assert main([str(tmp_path), "data=bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffpool-predict: data=bogus is not a data config of diffpool-train:")
    assert "the options are aids, bzr," in err and "mutag" in err and len(err.splitlines()) == 1


def test_a_nested_data_entry_changes_that_entry_only():
    """``data.dataset.root=X`` (an OGB or PyG run's root) is one entry of the dataset's spec,
    merged into the run's; a spec of its own replaces the run's."""
    from diffpool.cli.predict import parse_options
    from diffpool.training.predict import _merged

    _, _, data = parse_options(["data.dataset.root=/elsewhere", "data.batch_size=8"])
    assert data == {"dataset": {"root": "/elsewhere"}, "batch_size": 8}
    run = {"dataset": {"_target_": "diffpool.datasets.load_ogb", "root": "a", "name": "x"}}
    assert _merged(run, data)["dataset"] == {**run["dataset"], "root": "/elsewhere"}
    spec = {"_target_": "diffpool.datasets.load_tu", "name": "MUTAG"}
    assert _merged(run, {"dataset": spec})["dataset"] == spec
