"""benchmarks/optimisations.py: before/after medians and ratios, and its recorded changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optimisations.py"


@pytest.fixture(scope="module")
def optimisations():
    return load_script(SCRIPT, "optimisations")


def _result(case_times: dict) -> dict:
    """A benchmark JSON as training_throughput.py writes it: {case: (seconds, peak) or None}."""
    rows = []
    for case, value in case_times.items():
        run = (
            {"status": "timeout"}
            if value is None
            else {"status": "ok", "seconds_per_epoch": value[0], "peak_bytes": value[1]}
        )
        rows.append({"case": case, "runs": {"ours_per_graph": run}})
    return {"meta": {}, "rows": rows}


def test_compare_takes_each_sides_median_and_leaves_out_unfinished_cases(optimisations):
    entry = {"benchmark": "training_throughput.py"}
    before = [
        _result({"DD": (50.0, 400), "PROTEINS": (3.0, 100), "ENZYMES": (1.0, 10)}),
        _result({"DD": (54.0, 400), "PROTEINS": None, "ENZYMES": (1.0, 10)}),
        _result({"DD": (52.0, 400), "PROTEINS": (3.2, 100), "ENZYMES": (1.0, 10)}),
    ]
    after = [
        _result({"DD": (26.0, 200), "PROTEINS": (3.0, 100), "ENZYMES": None}),
        _result({"DD": (30.0, 200), "PROTEINS": (3.1, 100), "ENZYMES": None}),
    ]
    rows = {row["case"]: row for row in optimisations.compare(entry, before, after)}
    assert set(rows) == {"DD", "PROTEINS"}  # ENZYMES never finished after the change
    dd = rows["DD"]
    assert dd["before_seconds"] == 52.0 and dd["after_seconds"] == 28.0
    assert dd["speedup"] == pytest.approx(52.0 / 28.0)
    assert dd["memory_ratio"] == pytest.approx(2.0)
    assert rows["PROTEINS"]["before_runs"] == [3.0, 3.2]


def test_every_recorded_change_names_a_known_benchmark_and_distinct_key(optimisations):
    keys = [entry["key"] for entry in optimisations.OPTIMISATIONS]
    assert len(keys) == len(set(keys))
    for entry in optimisations.OPTIMISATIONS:
        assert entry["benchmark"] in optimisations.SECONDS
        assert (SCRIPT.parent / entry["benchmark"]).is_file()
        assert entry["what"] and entry["why"]


def test_an_unknown_change_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "no-such-change"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "unknown optimisation(s) ['no-such-change']" in proc.stderr
    assert "narrowed-pool-head" in proc.stderr


def test_rerunning_one_change_keeps_the_others(optimisations, tmp_path):
    """``--only KEY`` replaces that change's result; the file's others stay, in recorded order,
    and results from before per-result commands get the file's command."""
    keys = [entry["key"] for entry in optimisations.OPTIMISATIONS]

    def result(key, command):
        return {"entry": {"key": key}, "rows": [], "command": command}

    path = tmp_path / "optimisations.json"
    old = [{"entry": {"key": k}, "rows": []} for k in keys[:2]]
    path.write_text(json.dumps({"meta": {"command": "old", "repeats": 2}, "results": old}))
    loaded = optimisations.load_results(path)
    assert [r["command"] for r in loaded] == ["old", "old"]
    merged = optimisations.merge_results(loaded, [result(keys[0], "new")])
    assert [r["entry"]["key"] for r in merged] == keys[:2]
    assert [r["command"] for r in merged] == ["new", "old"]
    assert optimisations.load_results(tmp_path / "missing.json") == []
