"""benchmarks/layouts.py: every layout timed on the same batches, and a quick run's table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, load_script

SCRIPT = ROOT / "benchmarks" / "layouts.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "layouts")


def test_wins_only_beyond_the_spread(bench):
    cells = bench.summarise(
        {"auto": [1.0, 1.1, 1.2], "dense": [1.0, 1.05, 1.1], "sparse": [1.5, 1.6, 1.7]}
    )
    assert cells["dense"]["median"] == 1.05 and cells["dense"]["vs_best"] == 1.0
    assert cells["sparse"]["vs_auto"] == pytest.approx(1.6 / 1.1)
    assert not cells["dense"]["wins"]  # its range overlaps auto's
    assert bench.wins_except_auto(cells) == {"dense": True, "sparse": False}


def test_a_quick_run_has_every_cell(tmp_path):
    """``--quick`` (MUTAG, 2 rounds) into a temporary folder: every budget has every layout
    (per_bucket with per-graph budgets only), each timed with positive CPU seconds, and the
    planner's pick of every batch is recorded."""
    out = tmp_path / "layouts"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["dataset"], r["budget"]): r for r in results["layouts"]}
    assert set(rows) == {("MUTAG", "fixed"), ("MUTAG", "per_graph")}
    for (_, budget), row in rows.items():
        expected = ["auto", "padded", "sparse"] + (["per_bucket"] * (budget != "fixed"))
        assert list(row["cells"]) == expected
        for cell in row["cells"].values():
            assert cell["status"] == "ok"
            assert len(cell["rounds"]) == 2 and min(cell["rounds"]) > 0
            assert 0 < cell["min"] <= cell["median"] <= cell["max"]
            assert cell["vs_best"] >= 1.0 and cell["vs_auto"] > 0
        assert len(row["auto_picks"]) == row["batches"]
        picks = {p["layout"] for p in row["auto_picks"]}
        assert picks <= {"padded", "sparse", "per_bucket"}
    (factored,) = results["factored"]
    assert set(factored["cells"]) == {"factored", "unfactored"}
    assert all(c["median"] > 0 for c in factored["cells"].values())
    text = out.with_suffix(".md").read_text()
    assert "## Verdict" in text and "python benchmarks/layouts.py --quick" in text
