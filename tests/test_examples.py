"""Every script of examples/ runs, with a tiny budget, from an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT

EXAMPLES = {
    "enzymes_layer.py": (["--epochs", "1", "--root", "data"], "test accuracy"),
    "two_levels.py": (["--epochs", "1", "--graphs", "100"], "link loss per level"),
    "own_dataset.py": (["--epochs", "1", "--graphs", "100"], "test accuracy"),
    "large_graphs.py": (["--largest", "400", "--graphs", "5"], "per-graph:"),
    "regression_zinc_like.py": (
        ["--epochs", "1", "--graphs", "100"],
        "at epoch 0, the lowest validation MAE",  # the best epoch is tested, not the last
    ),
    # on a tiny copy in OGB's layout, written by the test (no network)
    "ogb_molhiv.py": (["--epochs", "1", "--root", "OGB"], "OGB evaluator"),
}


def test_every_example_is_tested():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == set(EXAMPLES)


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path):
    args, expected = EXAMPLES[script]
    if script == "ogb_molhiv.py":
        pytest.importorskip("ogb", reason="the ogb extra")
        from helpers import write_ogb_layout

        write_ogb_layout(tmp_path / "OGB", "ogbg-molhiv", num_graphs=60)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout
    assert "Trainable params" not in proc.stdout + proc.stderr  # one result line, no model table
    if script == "regression_zinc_like.py":  # its best-epoch checkpoint lived in a temp folder
        assert not any(tmp_path.iterdir())
    assert "--epochs" in (ROOT / "examples" / script).read_text() or script == "large_graphs.py"
