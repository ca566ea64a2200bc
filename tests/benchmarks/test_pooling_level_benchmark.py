"""benchmarks/pooling_level.py: every formulation pools the same thing, and the table's ratios
are against the fastest peer."""

from __future__ import annotations

import json
import math
from importlib.util import find_spec

import pytest
import torch

from helpers import ROOT, load_script, random_batch

SCRIPT = ROOT / "benchmarks" / "pooling_level.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "pooling_level")


def test_every_fixed_formulation_pools_the_same_embeddings_alike(bench):
    """Same Z, same assignment head: X' and A' agree between ours, PyG's dense formulation
    (padded to the batch and to a larger 'dataset') and tgp in both modes (where installed)."""
    batch = random_batch([7, 12, 5, 9], seed=3)
    hidden, clusters = 8, 4
    z = torch.randn(batch.num_nodes, hidden)
    head = torch.nn.Linear(hidden, clusters)
    names = ["ours_fixed", "dense_batch_pad", "dense_dataset_pad"]
    if find_spec("tgp") is not None:  # torch-geometric-pool, the peer library
        names += ["tgp_batched", "tgp_unbatched"]
    outputs = {}
    for name in names:
        model = bench.build(name, clusters, 0.5, hidden, head)
        x, adj, _ = bench.pool(name, model, z, batch, 15, {})
        outputs[name] = (x, adj)
    x0, adj0 = outputs["ours_fixed"]
    for name, (x, adj) in outputs.items():
        assert torch.allclose(x, x0, atol=1e-5), name
        # tgp returns A'^T (adj_transpose): the graphs are undirected, so it is A'
        assert torch.allclose(adj, adj0, atol=1e-5), name


def test_per_graph_budgets_use_fewer_clusters(bench):
    batch = random_batch([7, 12, 5, 9], seed=3)
    z = torch.randn(batch.num_nodes, 8)
    model = bench.build("ours_per_graph", 6, 0.25, 8, torch.nn.Linear(8, 6))
    x, _, _ = bench.pool("ours_per_graph", model, z, batch, 15, {})
    assert x.size(1) == math.ceil(0.25 * 12)


def test_the_table_names_the_fastest_peer(bench, tmp_path):
    def run(seconds, peak):
        return dict(status="ok", seconds=seconds, peak_bytes=peak, num_clusters=4,
                    batch_max_nodes=12, dataset_max_nodes=15)  # fmt: skip

    mib = 2**20
    rounds = [run(0.004, 10 * mib), run(0.002, 30 * mib), run(0.003, 20 * mib)]
    median = bench.median_of_rounds(rounds)
    assert median["seconds"] == 0.003 and median["peak_bytes"] == 20 * mib
    assert median["rounds"] == 3
    row = dict(case="ENZYMES", kind="real", runs={
        "ours_fixed": median, "dense_batch_pad": run(0.006, 40 * mib),
        "tgp_unbatched": run(0.0045, 10 * mib),
        "tgp_batched": dict(status="not installed")})  # fmt: skip
    meta = dict(command="c", machine="m", device="cpu", torch="t", batch_size=20, ratio=0.25,
                hidden=64, rounds=3)  # fmt: skip
    path = tmp_path / "t.md"
    bench.write_markdown(dict(meta=meta, rows=[row]), path)
    text = path.read_text()
    # every formulation of the level assigns with the same head on Z: one architecture, the
    # runs written before they named it included
    ours = "| ours_fixed | mlp | 3.00 | 20 MiB | 1.50x (tgp_unbatched) | 0.50x (tgp_unbatched) |"
    assert ours in text
    assert "| tgp_batched | mlp | not installed" in text
    assert "another architecture" not in text


def test_ours_is_built_as_a_user_builds_it(bench):
    """The table times the default path: the layer validates its inputs (#42, point 4)."""
    head = torch.nn.Linear(8, 4)
    for name in ("ours_fixed", "ours_per_graph"):
        layer = bench.build(name, 4, 0.25, 8, head)
        assert layer.validate, name
        assert torch.equal(layer.head.weight, head.weight)


@pytest.mark.slow  # a benchmark run: 9 s; CI runs it
def test_a_run_records_its_architecture_and_host_syncs(bench, tmp_path):
    out = tmp_path / "level"
    bench.main(["--real", "MUTAG", "--synthetic", "--formulations", "ours_fixed",
                "dense_batch_pad", "--rounds", "1", "--reps", "1", "--min-time", "0",
                "--out", str(out)])  # fmt: skip
    results = json.loads(out.with_suffix(".json").read_text())
    runs = results["rows"][0]["runs"]
    assert {f: m["architecture"] for f, m in runs.items()} == dict.fromkeys(runs, "mlp")
    for name, run in runs.items():
        assert run["status"] == "ok" and run["host_sync_method"] == "cpu_proxy", name
        assert isinstance(run["host_syncs"], int), name
    assert results["meta"]["source_sha256"] and results["meta"]["skipped"] == 0


def test_validation_cost_pairs_the_rounds(bench):
    """Each round's validated time over the same round's unvalidated one: the median ratio
    and the range (a drift between rounds hits both sides of a pair alike)."""
    on = dict(status="ok", seconds=1.1, round_seconds=[1.1, 4.0, 2.0])
    off = dict(status="ok", seconds=1.0, round_seconds=[1.0, 2.0, 2.0])
    results = {
        "rows": [{"case": "MUTAG", "runs": {"ours_fixed": on, "ours_fixed_unvalidated": off}}]
    }
    lines = bench._validation_cost(results)
    assert lines[-1] == "| MUTAG | ours_fixed | +10.0% (+0.0% to +100.0%) |"
    on["round_seconds"], off["round_seconds"] = [1.1, 4.0], [1.0, 2.0]  # an even count
    assert (
        bench._validation_cost(results)[-1] == "| MUTAG | ours_fixed | +55.0% (+10.0% to +100.0%) |"
    )
