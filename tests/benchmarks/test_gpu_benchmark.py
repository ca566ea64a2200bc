"""benchmarks/gpu.py: both speed benchmarks in one command, end to end on the CPU (--dry-run),
and a clear refusal where no CUDA device is; the host-sync counter and the time budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, load_script

SCRIPT = ROOT / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def measure():
    return load_script(ROOT / "benchmarks" / "measure.py", "measure")


@pytest.mark.slow  # both benchmarks end to end: 45 s; CI runs it
def test_the_dry_run_writes_both_tables(tmp_path):
    """The GPU command's whole pipeline on the CPU: eager and compiled (dynamo only) runs of
    both benchmarks, each run's architecture and host syncs, the tables stamped."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 300
    for stem, ours, peer in (
        ("pooling_level_cpu", "mlp", "dense_batch_pad"),
        ("training_throughput_cpu", "gnn_pool", "dense_pyg"),
    ):
        results = json.loads((tmp_path / f"{stem}.json").read_text())
        runs = results["rows"][0]["runs"]
        assert set(runs) == {"ours_fixed", "ours_fixed+compiled", peer}, stem
        assert all(m["status"] == "ok" for m in runs.values()), (stem, runs)
        assert runs["ours_fixed"]["architecture"] == ours, stem
        assert runs["ours_fixed+compiled"]["compile"] == "dynamo-only", stem
        assert isinstance(runs["ours_fixed"]["host_syncs"], int), stem
        assert runs["ours_fixed+compiled"]["host_syncs"] is None  # the proxy sees no graph
        meta = results["meta"]
        assert meta["device"] == "cpu" and meta["compile"] == "dynamo-only"
        assert len(meta["source_sha256"]) == 64
        text = (tmp_path / f"{stem}.md").read_text()
        assert "host syncs" in text and f"| ours_fixed+compiled | {ours} |" in text, stem


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_it_stops_at_once_and_says_why(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_source_hash_names_the_code(tmp_path, measure):
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    first = measure.source_hash(package)
    (package / "__pycache__" / "a.cpython.pyc").write_bytes(b"ignored")
    assert measure.source_hash(package) == first
    (package / "a.py").write_text("x = 2\n")
    assert measure.source_hash(package) != first
    meta = {"provenance": {"diffpool": "0.1", "commit": None}, "source_sha256": first}
    assert measure.code_description(meta) == f"diffpool 0.1 (source sha256 {first[:12]})"
    meta["provenance"] = {"diffpool": "0.1", "commit": "abcdef0123", "modified": False}
    assert measure.code_description(meta) == "abcdef0"


def test_the_cpu_proxy_counts_what_would_wait_for_a_gpu(measure):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(5, 3)

    def step():
        optimizer.zero_grad()
        loss = model(x).sum()
        loss.backward()
        optimizer.step()  # Adam reads its step counters with .item(): on the host, not counted
        x[x > 0]  # a boolean mask: its size depends on the data
        x.tolist()
        torch.repeat_interleave(torch.tensor([1, 2]))
        torch.repeat_interleave(x, 2, dim=0)  # a fixed size: no wait
        torch.repeat_interleave(x, torch.tensor([1, 2, 1, 1, 1]), dim=0, output_size=6)
        return float(loss.detach())

    step()
    counted = measure.count_host_syncs(step, "cpu")
    assert counted["method"] == "cpu_proxy"
    assert counted["calls"] == {
        "Tensor.__getitem__": 1,
        "Tensor.tolist": 1,
        "repeat_interleave": 1,
        "Tensor.__float__": 1,
    }
    assert counted["count"] == 4


def test_a_spent_time_budget_skips_the_measurement(measure):
    spent = measure.Deadline(1e-9)
    time.sleep(0.01)
    assert spent.run([sys.executable, "-c", "print(1)"], 60, 1) == {"status": spent.SKIPPED}
    budget = measure.Deadline(3)
    slow = budget.run([sys.executable, "-c", "import time; time.sleep(30)"], 60, 1)
    assert slow["status"] == "timeout (time budget)"
    unlimited = measure.Deadline(0)
    ok = unlimited.run([sys.executable, "-c", "print('{\"a\": 1}')"], 60, 1)
    assert ok == {"status": "ok", "a": 1}


def test_the_table_says_which_measurements_the_budget_skipped(tmp_path):
    throughput = load_script(ROOT / "benchmarks" / "training_throughput.py", "training_throughput")
    skipped = {"status": "skipped (time budget)", "architecture": "gnn_pool"}
    meta = {"command": "c", "machine": "m", "device": "cuda", "torch": "t", "deadline": 250.0,
            "skipped": 1}  # fmt: skip
    rows = [{"case": "PROTEINS", "kind": "real", "runs": {"ours_fixed": skipped}}]
    path = tmp_path / "t.md"
    throughput.write_markdown({"meta": meta, "rows": rows}, path)
    text = path.read_text()
    assert "Time budget (`--deadline 250` s): 1 measurement(s) did not run" in text
    assert "| PROTEINS | | | | ours_fixed | gnn_pool | skipped (time budget) |" in text
    assert "set_sync_debug_mode" in text  # a CUDA table says what its sync column counts


@pytest.mark.parametrize(
    "name, slug",
    [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-40GB", "a100"),
     ("Tesla V100-PCIE-16GB", "v100"), ("NVIDIA GeForce RTX 4090", "gpu")],
)  # fmt: skip
def test_the_tables_are_named_after_the_gpu(monkeypatch, name, slug):
    gpu = load_script(SCRIPT, "gpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert gpu.device_slug("cuda") == slug
    assert gpu.device_slug("cpu") == "cpu"
