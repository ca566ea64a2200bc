"""benchmarks/pooling_level.py: every formulation pools the same thing, and the table's ratios
are against the fastest peer."""

from __future__ import annotations

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
    assert "| ours_fixed | 3.00 | 20 MiB | 1.50x (tgp_unbatched) | 0.50x (tgp_unbatched) |" in text
    assert "| tgp_batched | not installed" in text
