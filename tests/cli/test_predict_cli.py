"""``diffpool-predict``'s options: a bad one is an error that names it and what it takes."""

from __future__ import annotations

import json

import pytest

from diffpool.cli.predict import main


@pytest.mark.parametrize(
    "option, message",
    [
        ("split=bogus", "split must be one of test, val, train, all, got 'bogus'"),
        ("threads=abc", "threads must be a whole number >= 0, got 'abc'"),
        ("threads=-1", "threads must be a whole number >= 0, got -1"),
        ("batch_size=0", "batch_size must be a whole number >= 1, got 0"),
        ("batch_size=1.5", "batch_size must be a whole number >= 1, got 1.5"),
        ("assignments=yes", "assignments must be true or false, got 'yes'"),
    ],
)
def test_a_bad_option_is_a_usage_error_that_names_it_and_its_values(
    tmp_path, capsys, option, message
):
    assert main([f"run={tmp_path}", option]) == 2
    err = capsys.readouterr().err
    assert err == f"diffpool-predict: {message}\n"


def test_the_run_is_required(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("diffpool-predict: run= is a diffpool-train job")


def test_an_unknown_data_config_is_hydras_error_that_names_the_options(tmp_path, capsys):
    (tmp_path / "results.json").write_text(
        json.dumps(
            {"dataset": "MUTAG", "fold": 0, "num_folds": 10, "model": "diffpool", "epochs": 1,
             "fair": {}, "test_curve": [0.5], "val_curve": [0.5], "wall_time_s": 1.0,
             "config": {"seed": 0}, "schema": 2}
        )
    )  # fmt: skip
    assert main([f"run={tmp_path}", "data=bogus"]) == 1
    err = capsys.readouterr().err
    assert "Could not find 'data/bogus'" in err and "\tmutag\n" in err


def test_data_entries_compose_as_hydra_overrides():
    """``++data.root=X`` adds an entry (or changes the option's), ``data.dataset.root=X`` (an
    OGB or PyG run's root) is one entry of the dataset's spec, merged into the run's; a spec
    of its own replaces the run's."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from diffpool.training.predict import _merged

    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose("predict", ["run=x", "++data.dataset.root=/elsewhere", "++data.batch_size=8"])
        tu = compose("predict", ["run=x", "data=mutag", "data.root=/elsewhere/TU"])
    data = OmegaConf.to_container(cfg.data)
    assert data == {"dataset": {"root": "/elsewhere"}, "batch_size": 8}
    assert (tu.data.name, tu.data.root) == ("MUTAG", "/elsewhere/TU")
    run = {"dataset": {"_target_": "diffpool.datasets.load_ogb", "root": "a", "name": "x"}}
    assert _merged(run, data)["dataset"] == {**run["dataset"], "root": "/elsewhere"}
    spec = {"_target_": "diffpool.datasets.load_tu", "name": "MUTAG"}
    assert _merged(run, {"dataset": spec})["dataset"] == spec


def test_a_run_file_names_no_target_through_a_data_options_interpolation(tmp_path, capsys):
    """``data=zinc`` interpolates ``${model.hidden_channels}``, which diffpool-predict takes
    from the run's results.json: a spec there joins the user's data config, and its name
    must not become one the user named (trusted) for the run's other specs."""
    import shutil

    from helpers import trained_mutag_run

    run = trained_mutag_run(tmp_path, "run")
    marker = tmp_path / "MARKER"
    attack = {"_target_": "os.system", "command": f"touch {marker}"}
    result = json.loads((run / "results.json").read_text())
    result["config"]["model"]["hidden_channels"] = attack
    result["config"]["data"] = {
        "_target_": "diffpool.training.GraphDataModule",
        "transform": attack,
    }
    (run / "results.json").write_text(json.dumps(result))
    shutil.rmtree(tmp_path / "TU")  # nothing to load: the transform is built first
    code = main([f"run={run}", "data=zinc", f"++data.dataset.root={tmp_path / 'ZINC'}"])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert code == 2 and "'os.system'" in err and "not in the package's registries" in err, err
