"""The max readout's backward: PyG's ``global_max_pool`` (torch's ``scatter_reduce`` backward)
against diffpool's own (``diffpool.models.readout``), side by side in one process.

Two measurements, each alternating the two in rounds so that a drift of this shared machine hits
both alike, on one thread:

* the readout alone, forward and backward, on a batch of 20 graphs of 12 to 50 nodes and 192
  channels (the width of ``DiffPoolNet``'s first-level readout with 3 layers of 64);
* DiffPool's training step (``build_model("diffpool")``, 2 levels at ratio 0.25, 3 SAGE layers of
  64, batch 20, Adam; forward, losses, backward, optimizer) on the synthetic 50-node graphs of
  ``training_throughput.py``, on MUTAG and on ENZYMES, fixed and per-graph budgets, the
  model's readout switched between the two.

The table gives medians and the ratio PyG's / ours per round (median and quartiles: > 1, ours
is faster).

    python benchmarks/readout.py --out benchmarks/results/readout   # about 4 minutes
    python benchmarks/readout.py --quick                            # about 20 seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import code_description, machine_description
from training_throughput import _dataset

HERE = Path(__file__).resolve().parent


def _rounds(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of ``first()`` and ``second()`` per round, alternating (after one of each)."""
    first(), second()
    a, b = [], []
    for _ in range(rounds):
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return a, b


def _row(case: str, pyg: list[float], ours: list[float], per: int) -> dict:
    ratios = [p / o for p, o in zip(pyg, ours)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return dict(
        case=case,
        pyg_ms=statistics.median(pyg) / per * 1e3,
        ours_ms=statistics.median(ours) / per * 1e3,
        ratio=statistics.median(ratios),
        quartiles=[q[0], q[2]],
        rounds=len(ratios),
    )


def readout_alone(rounds: int, repeats: int) -> dict:
    import torch
    from torch_geometric.nn import global_max_pool

    from diffpool.models.readout import sparse_readout

    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(12, 51, (20,), generator=gen)
    batch = torch.repeat_interleave(torch.arange(20), counts)
    x = torch.randn(int(counts.sum()), 192, generator=gen, requires_grad=True)
    grad = torch.randn(20, 192, generator=gen)

    def pyg():
        for _ in range(repeats):
            global_max_pool(x, batch, size=20).backward(grad)

    def ours():
        for _ in range(repeats):
            sparse_readout("max", x, batch, 20).backward(grad)

    return _row("readout alone", *_rounds(pyg, ours, rounds), repeats)


def training_step(case: str, budget: str, rounds: int, batches: int, tu_dir: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import global_max_pool

    from diffpool.models import build_model, readout

    ours_readout = readout._SPARSE["max"]
    with tempfile.TemporaryDirectory() as cache:
        if case.startswith("synthetic"):
            spec = {"kind": "synthetic", "n_max": int(case.split()[-1])}
        else:
            spec = {"kind": "real", "name": case, "tu_dir": tu_dir}
        dataset, max_nodes = _dataset(spec, Path(cache))
        classes = int(max(int(d.y.max()) for d in dataset)) + 1
        loaded = list(DataLoader(dataset, batch_size=20))[:batches]
    torch.manual_seed(0)
    model = build_model("diffpool", loaded[0].x.size(-1), classes, max_nodes, hidden_channels=64,
                        num_layers=3, num_levels=2, ratio=0.25, budget=budget)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch(max_readout):
        def run():
            readout._SPARSE["max"] = max_readout
            for b in loaded:
                optimizer.zero_grad()
                out = model(b.x, b.edge_index, b.batch, batch_size=b.num_graphs,
                            return_assignments=False, return_levels=False)  # fmt: skip
                (F.cross_entropy(out.logits, b.y) + out.aux_loss).backward()
                optimizer.step()

        return run

    try:
        times = _rounds(epoch(global_max_pool), epoch(ours_readout), rounds)
    finally:
        readout._SPARSE["max"] = ours_readout
    return _row(f"training step, {case}, {budget}", *times, len(loaded))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="synthetic 50 only, 3 rounds")
    parser.add_argument("--tu-dir", default=str(HERE.parent.parent / "shared" / "data" / "TU"))
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    import torch

    from diffpool.utils.provenance import provenance

    torch.set_num_threads(1)
    rounds = 3 if args.quick else args.rounds
    cases = ["synthetic 50"] if args.quick else ["synthetic 50", "MUTAG", "ENZYMES"]
    rows = [readout_alone(rounds, 10 if args.quick else 50)]
    for case in cases:
        for budget in ("fixed", "per_graph"):
            rows.append(training_step(case, budget, rounds, 10, args.tu_dir))
    meta = dict(command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                machine=machine_description("cpu"), torch=torch.__version__,
                provenance=provenance(), date=time.strftime("%Y-%m-%d"))  # fmt: skip
    lines = [
        "# The max readout's backward: PyG's global_max_pool against diffpool's",
        "",
        f"Command: `python benchmarks/{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}; code {code_description(meta)}; "
        "1 thread. Times are medians over alternating rounds (a training step: the mean of 10 "
        "batches); the ratio is PyG's time over ours per round (> 1: ours is faster), its "
        "median and quartiles.",
        "",
        "| case | PyG's backward (ms) | ours (ms) | PyG's / ours | quartiles | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['pyg_ms']:.2f} | {r['ours_ms']:.2f} | "
                     f"{r['ratio']:.3f} | {r['quartiles'][0]:.3f}-{r['quartiles'][1]:.3f} | "
                     f"{r['rounds']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
