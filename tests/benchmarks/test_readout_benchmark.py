"""benchmarks/readout.py: both measurements run and restore the model's readout."""

from __future__ import annotations

from helpers import ROOT, load_script


def test_a_round_of_each_measurement_and_the_readout_restored():
    bench = load_script(ROOT / "benchmarks" / "readout.py", "readout_bench")
    from diffpool.models import readout

    ours = readout._SPARSE["max"]
    alone = bench.readout_alone(rounds=1, repeats=1)
    assert alone["case"] == "readout alone" and alone["pyg_ms"] > 0 and alone["ours_ms"] > 0
    step = bench.training_step("synthetic 50", "per_graph", rounds=1, batches=2, tu_dir="")
    assert step["rounds"] == 1 and step["ratio"] > 0
    assert readout._SPARSE["max"] is ours
