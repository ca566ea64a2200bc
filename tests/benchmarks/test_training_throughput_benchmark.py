"""benchmarks/training_throughput.py: repeated runs reduced to medians, and their table."""

from __future__ import annotations

import json

import pytest

from helpers import ROOT, load_script

SCRIPT = ROOT / "benchmarks" / "training_throughput.py"
PHASES = ("loading", "encoders", "pooling", "other_forward", "backward", "optimizer")


@pytest.fixture(scope="module")
def throughput():
    return load_script(SCRIPT, "training_throughput")


def _run(seconds, peak, phase):
    return {
        "status": "ok",
        "seconds_per_epoch": seconds,
        "peak_bytes": peak,
        "phases": dict.fromkeys(PHASES, phase),
        "num_graphs": 600,
        "max_nodes": 126,
        "num_clusters": [32, 8],
        "num_batches": 30,
        "measured_batches": 30,
        "extrapolated": False,
    }


def test_median_run_takes_medians_of_the_finished_runs(throughput):
    runs = [_run(3.0, 300, 1.0), {"status": "timeout"}, _run(1.0, 100, 2.0), _run(9.0, 200, 3.0)]
    m = throughput.median_run(runs)
    assert m["seconds_per_epoch"] == 3.0 and m["peak_bytes"] == 200
    assert m["phases"]["backward"] == 1.0  # the record of the median run
    assert m["repeat_seconds"] == [3.0, 1.0, 9.0]
    two = throughput.median_run([_run(1.0, 100, 2.0), _run(2.0, 300, 3.0)])
    assert two["seconds_per_epoch"] == 1.5 and two["peak_bytes"] == 200
    failed = {"status": "out of memory"}
    assert throughput.median_run([failed, {"status": "timeout"}]) is failed


def test_the_table_shows_the_runs_range(throughput, tmp_path):
    runs = {
        "ours_fixed": throughput.median_run([_run(1.0, 2**20, 1.0), _run(1.2, 2**20, 1.0)]),
        "dense_pyg": _run(2.2, 2**21, 1.0),
    }
    meta = {"command": "c", "machine": "m", "device": "cpu", "torch": "t"}
    results = {"meta": meta, "rows": [{"case": "ENZYMES", "kind": "real", "runs": runs}]}
    path = tmp_path / "t.md"
    throughput.write_markdown(results, path)
    text = path.read_text()
    # two decimals under 10 s (small graphs' epochs), one above
    assert "| ours_fixed | gnn_pool | 1.10 [1.00-1.20, 2 runs] | 30 / 30 |" in text
    assert "| 2.00x (dense_pyg) | 2.00x (dense_pyg) |" in text
    assert throughput._seconds(0.194) == "0.19" and throughput._seconds(18943.2) == "18,943.2"


def test_bce_link_loss_is_refused_beside_the_dense_formulation(throughput, capsys):
    """PyG's dense_diff_pool has the Frobenius link loss only: timing ours with the BCE against
    it would compare different losses."""
    with pytest.raises(SystemExit):
        throughput.main(["--link-loss", "bce", "--real", "ENZYMES"])
    assert "dense_pyg" in capsys.readouterr().err


@pytest.mark.slow  # a benchmark run: 9 s; CI runs it
def test_bce_link_loss_run_records_its_loss(throughput, tmp_path):
    out = tmp_path / "bce"
    throughput.main(
        [
            "--quick",
            "--formulations",
            "ours_per_graph",
            "--link-loss",
            "bce",
            "--out",
            str(out),
        ]
    )
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["meta"]["link_loss"] == "bce"
    for row in results["rows"]:
        run = row["runs"]["ours_per_graph"]
        assert run["status"] == "ok" and run["finite_loss"], row["case"]
    assert "bce link loss" in out.with_suffix(".md").read_text()


def _worker(tmp_path, formulation: str, node_labels: bool, edge_labels: bool = False) -> dict:
    """One worker run of the benchmark on a tiny TU dataset, its JSON result."""
    import subprocess
    import sys

    from helpers import write_tu

    write_tu(tmp_path / "cache" / "tu" / "TOY" / "raw", "TOY", node_labels, edge_labels)
    case = json.dumps({"kind": "real", "name": "TOY", "tu_dir": str(tmp_path)})
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--worker",
            "--case",
            case,
            "--formulation",
            formulation,
            "--cache",
            str(tmp_path / "cache"),
            "--max-batches",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("formulation", ["ours_per_graph", "dense_pyg"])
def test_a_dataset_without_node_features_is_timed_with_degree_features(tmp_path, formulation):
    """COLLAB has no node labels: the benchmark gives it the training presets' one-hot degree
    (it failed with KeyError: 'x' for every formulation)."""
    result = _worker(tmp_path, formulation, node_labels=False)
    assert result["finite_loss"] and result["max_nodes"] == 4 and result["measured_batches"] == 1


def test_the_dense_formulation_times_the_connectivity_of_a_dataset_with_edge_features(tmp_path):
    """MUTAG has bond types: ToDense stacked them into the adjacency and dense_pyg failed with
    'too many values to unpack'; every formulation times the connectivity only."""
    result = _worker(tmp_path, "dense_pyg", node_labels=True, edge_labels=True)
    assert result["finite_loss"] and result["measured_batches"] == 1


def test_ours_are_timed_against_the_peers_of_their_architecture(throughput, tmp_path):
    """tgp's DiffPool (an MLP assignment, no pooling GNN) is faster here, but ours (a pooling
    GNN) is compared with PyG's dense formulation; tgp's figure is the separate column."""
    runs = {
        "ours_fixed": dict(_run(1.0, 2**20, 1.0), architecture="gnn_pool", host_syncs=7),
        "dense_pyg": dict(_run(1.5, 2**21, 1.0), architecture="gnn_pool", host_syncs=0),
        "tgp_unbatched": dict(_run(0.5, 2**19, 1.0), architecture="mlp"),
        "tgp_batched": {"status": "not installed", "architecture": "mlp"},
        "flat": dict(_run(0.25, 2**18, 1.0), architecture="none"),
    }
    meta = {"command": "c", "machine": "m", "device": "cpu", "torch": "t"}
    results = {"meta": meta, "rows": [{"case": "ENZYMES", "kind": "real", "runs": runs}]}
    path = tmp_path / "t.md"
    throughput.write_markdown(results, path)
    text = path.read_text()
    assert (
        "| ours_fixed | gnn_pool | 1.00 | 30 / 30 | 1 MiB | 1.50x (dense_pyg) | 2.00x "
        "(dense_pyg) | 0.50x (tgp_unbatched) | 4.00 | 7 |" in text
    )
    assert "| tgp_batched | mlp | not installed |" in text
    assert "`gnn_pool`: S = softmax(GNN_pool(A, X))" in text and "(`tgp_unbatched`" in text


def test_an_mlp_formulation_of_ours_would_be_timed_against_tgp(throughput, monkeypatch):
    """One entry of FORMULATIONS adds ours with another architecture; the peers follow it."""
    from measure import Formulation

    formulations = dict(throughput.FORMULATIONS, ours_mlp=Formulation("mlp", "ours"))
    runs = {
        "ours_mlp": dict(_run(1.0, 1, 1.0), architecture="mlp"),
        "dense_pyg": dict(_run(1.5, 1, 1.0), architecture="gnn_pool"),
        "tgp_unbatched": dict(_run(0.8, 1, 1.0), architecture="mlp"),
        "tgp_batched": dict(_run(0.9, 1, 1.0), architecture="mlp"),
        "ours_mlp+compiled": dict(_run(0.7, 1, 1.0), architecture="mlp"),
    }
    same, other = throughput.best_peers(runs, "ours_mlp", "seconds_per_epoch", formulations)
    assert same == ("tgp_unbatched", 0.8) and other == ("dense_pyg", 1.5)


def test_a_quick_run_times_the_default_model_and_counts_host_syncs(throughput, tmp_path):
    out = tmp_path / "run"
    throughput.main(["--real", "MUTAG", "--scaling", "--formulations", "ours_fixed", "flat",
                     "--max-batches", "1", "--repeats", "1", "--out", str(out)])  # fmt: skip
    results = json.loads(out.with_suffix(".json").read_text())
    runs = results["rows"][0]["runs"]
    assert runs["ours_fixed"]["architecture"] == "gnn_pool"
    assert runs["flat"]["architecture"] == "none"
    for name, run in runs.items():
        assert run["status"] == "ok" and run["finite_loss"], name
        assert run["host_sync_method"] == "cpu_proxy" and run["host_syncs"] >= 0, name
    assert results["meta"]["source_sha256"]
