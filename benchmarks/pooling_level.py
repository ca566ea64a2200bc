"""Time and peak memory of one DiffPool level (forward + backward), side by side in one run.

Formulations, all with the same encoders (one GraphSAGE layer for GNN_embed, 64 channels, and
one for GNN_pool) and the same batch of 20 graphs:

* ``ours_fixed``: :class:`diffpool.DiffPoolConv`, C = ceil(ratio * largest graph of the dataset)
  clusters for every graph (the paper's rule);
* ``ours_per_graph``: the same layer with per-graph budgets ceil(ratio * N_g) (cap C);
* ``dense_batch_pad``: PyG's dense formulation padded to the batch's largest graph
  (``to_dense_batch`` + ``to_dense_adj`` + ``DenseSAGEConv`` + ``dense_diff_pool``), fixed C;
* ``dense_dataset_pad``: the same, padded to the dataset's largest graph (PyG's ``ToDense``
  example), fixed C. For synthetic batches the dataset is the batch, so it is not repeated.

Every measurement runs in a fresh subprocess; peak memory is measured during the first step as
described in ``benchmarks/measure.py`` (peak RSS rise on CPU, ``max_memory_allocated`` on
GPU). Times are medians over repetitions after that first step (a single step when
repetitions would exceed ``--time-budget``).

    python benchmarks/pooling_level.py                # everything, writes benchmarks/results/
    python benchmarks/pooling_level.py --quick        # a small subset, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from measure import (
    add_common_arguments,
    code_description,
    fmt_bytes,
    machine_description,
    peak_since,
    python,
    reset_peak,
    run_worker,
    scaling_plot,
    steady_malloc,
    tu_available,
    tu_dataset,
    without_assignment,
)

HERE = Path(__file__).resolve().parent
FORMULATIONS = ("ours_fixed", "ours_per_graph", "dense_batch_pad", "dense_dataset_pad")
REAL = ("ENZYMES", "PROTEINS", "DD")
SYNTHETIC = (50, 100, 250, 500, 1000, 2000, 4000)


# --------------------------------------------------------------------------- worker side
def _load_batch(case: dict, seed: int, batch_size: int, cache: Path):
    import torch
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import to_undirected

    gen = torch.Generator().manual_seed(seed)
    if case["kind"] == "real":
        dataset, dataset_max = tu_dataset(case["name"], case["tu_dir"], cache)
        idx = torch.randperm(len(dataset), generator=gen)[:batch_size]
        batch = Batch.from_data_list([dataset[int(i)] for i in idx])
        return batch, dataset_max
    n_max = case["n_max"]
    sizes = torch.randint(max(2, n_max // 4), n_max + 1, (batch_size,), generator=gen)
    sizes[0] = n_max
    graphs = []
    for n in sizes.tolist():
        e = torch.randint(0, n, (2, int(2.5 * n)), generator=gen)  # average degree ~5, like D&D
        e = to_undirected(e[:, e[0] != e[1]], num_nodes=n)
        graphs.append(Data(x=torch.randn(n, 16, generator=gen), edge_index=e))
    return Batch.from_data_list(graphs), n_max


def _build(formulation: str, in_channels: int, num_clusters: int, ratio: float, hidden: int):
    from torch_geometric.nn import DenseSAGEConv, SAGEConv

    from diffpool import DiffPoolConv

    if formulation.startswith("ours"):
        budget = ratio if formulation == "ours_per_graph" else None
        return DiffPoolConv(
            SAGEConv(in_channels, hidden),
            SAGEConv(in_channels, num_clusters),
            num_clusters,
            ratio=budget,
            validate=False,
        )
    import torch

    module = torch.nn.Module()
    module.embed = DenseSAGEConv(in_channels, hidden)
    module.pool = DenseSAGEConv(in_channels, num_clusters)
    return module


def _step(formulation, model, batch, dataset_max, device, skip_s):
    import torch
    from torch_geometric.nn import dense_diff_pool
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    if formulation.startswith("ours"):
        out = model(batch.x, batch.edge_index, batch.batch, batch_size=batch.num_graphs, **skip_s)
        loss = out.x.sum() + out.adj.sum() + out.aux_loss
    else:
        pad = dataset_max if formulation == "dense_dataset_pad" else None
        x, mask = to_dense_batch(batch.x, batch.batch, max_num_nodes=pad)
        adj = to_dense_adj(batch.edge_index, batch.batch, max_num_nodes=pad)
        z, s = model.embed(x, adj, mask), model.pool(x, adj, mask)
        x_out, adj_out, link, ent = dense_diff_pool(z, adj, s, mask)
        loss = x_out.sum() + adj_out.sum() + link + ent
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()


def worker(args) -> dict:
    import torch

    case = json.loads(args.case)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, dataset_max = _load_batch(case, args.seed, args.batch_size, Path(args.cache))
    num_clusters = math.ceil(args.ratio * dataset_max)
    model = _build(args.formulation, batch.num_features, num_clusters, args.ratio, args.hidden)
    model, batch = model.to(device), batch.to(device)
    skip_s = without_assignment(model.forward, "return_assignment")
    sizes = torch.bincount(batch.batch).cpu()
    info = dict(
        num_clusters=num_clusters,
        dataset_max_nodes=dataset_max,
        batch_max_nodes=int(sizes.max()),
        batch_mean_nodes=float(sizes.float().mean()),
        num_edges=int(batch.num_edges),
    )

    # Peak memory of the first (warm-up) step: afterwards the allocator's caches hold memory.
    base = reset_peak(device)
    t0 = time.perf_counter()
    _step(args.formulation, model, batch, dataset_max, device, skip_s)
    first = time.perf_counter() - t0
    peak = peak_since(device, base)
    if device.type == "cpu":
        steady_malloc()

    # At least --reps repetitions, more until --min-time has passed (millisecond steps need
    # hundreds of repetitions for a stable median on a shared machine).
    reps = args.reps if first * args.reps < args.time_budget else 0
    times = [first] if reps == 0 else []
    start = time.perf_counter()
    while reps and (
        len(times) < reps or (time.perf_counter() - start < args.min_time and len(times) < 2000)
    ):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        _step(args.formulation, model, batch, dataset_max, device, skip_s)
        times.append(time.perf_counter() - t0)
    times.sort()
    return dict(
        info,
        seconds=times[len(times) // 2],
        reps=len(times),
        first_seconds=first,
        peak_bytes=int(peak),
    )


# --------------------------------------------------------------------------- driver side
def run_one(case: dict, formulation: str, args) -> dict:
    cmd = [
        python(),
        __file__,
        "--worker",
        "--case",
        json.dumps(case),
        "--formulation",
        formulation,
        "--device",
        args.device,
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--ratio",
        str(args.ratio),
        "--hidden",
        str(args.hidden),
        "--reps",
        str(args.reps),
        "--time-budget",
        str(args.time_budget),
        "--min-time",
        str(args.min_time),
        "--cache",
        str(args.cache),
    ]
    return run_worker(cmd, args.timeout, args.threads)


def cases(args):
    out = []
    for name in args.real:
        if tu_available(name, args.tu_dir):
            out.append(dict(kind="real", name=name, tu_dir=str(args.tu_dir)))
        else:
            print(f"skip {name}: {args.tu_dir}/{name}.zip not found", file=sys.stderr)
    out += [dict(kind="synthetic", name=f"synthetic N_max={n}", n_max=n) for n in args.synthetic]
    return out


def write_markdown(results: dict, path: Path) -> None:
    meta = results["meta"]
    lines = [
        "# One DiffPool level: forward + backward, time and peak memory",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; device `{meta['device']}`; torch {meta['torch']}; "
        f"code {code_description(meta)}; "
        f"batch of {meta['batch_size']} graphs, ratio {meta['ratio']}, "
        f"{meta['hidden']} hidden channels, one SAGE layer per GNN.  ",
        "Ratios are against the fastest / smallest dense formulation measured on the same "
        "batch in the same run (> 1 means ours is faster / smaller).",
        "",
        "| batch | C (fixed) | N_max batch / dataset | formulation | time (s) | peak memory |"
        " speed-up vs best dense | memory ratio vs best dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        dense = [m for f, m in row["runs"].items() if f.startswith("dense") and m["status"] == "ok"]
        best_t = min((m["seconds"] for m in dense), default=None)
        best_m = min((m["peak_bytes"] for m in dense), default=None)
        for f, m in row["runs"].items():
            if m["status"] != "ok":
                lines.append(f"| {row['case']} | | | {f} | {m['status']} | | | |")
                continue
            speed = f"{best_t / m['seconds']:.2f}x" if best_t and f.startswith("ours") else ""
            mem = (
                f"{best_m / max(m['peak_bytes'], 1):.2f}x"
                if best_m and f.startswith("ours")
                else ""
            )
            lines.append(
                f"| {row['case']} | {m['num_clusters']} | {m['batch_max_nodes']} / "
                f"{m['dataset_max_nodes']} | {f} | {m['seconds']:.3f} | "
                f"{fmt_bytes(m['peak_bytes'])} | {speed} | {mem} |"
            )
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    rows = [r for r in results["rows"] if r["kind"] == "synthetic"]
    if not rows:
        return
    scaling_plot(
        rows,
        FORMULATIONS,
        lambda m: m["seconds"],
        "seconds (forward + backward)",
        "largest graph in the batch (nodes)",
        f"One DiffPool level, batch of {results['meta']['batch_size']} synthetic graphs "
        f"(device {results['meta']['device']})",
        path,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(
        p, stem="pooling_level", formulations=FORMULATIONS, real=REAL, timeout=1800.0, here=HERE
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="use a single repetition when reps would take longer than this",
    )
    p.add_argument(
        "--min-time", type=float, default=3.0, help="keep repeating a step for this long, s"
    )
    p.add_argument("--synthetic", nargs="*", type=int, default=list(SYNTHETIC))
    p.add_argument("--quick", action="store_true", help="ENZYMES + N_max 50/250 only")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.real, args.synthetic, args.reps, args.min_time = ["ENZYMES"], [50, 250], 2, 0.3
    import torch

    from diffpool.utils.provenance import provenance

    results = dict(
        meta=dict(
            command="python benchmarks/pooling_level.py " + " ".join(argv or sys.argv[1:]),
            machine=machine_description(args.device),
            device=args.device,
            torch=torch.__version__,
            provenance=provenance(),
            batch_size=args.batch_size,
            ratio=args.ratio,
            hidden=args.hidden,
            seed=args.seed,
            date=time.strftime("%Y-%m-%d"),
        ),
        rows=[],
    )
    for case in cases(args):
        row = dict(case=case["name"], kind=case["kind"], n_max=case.get("n_max"), runs={})
        for f in args.formulations:
            if f == "dense_dataset_pad" and case["kind"] == "synthetic":
                continue
            t0 = time.time()
            row["runs"][f] = run_one(case, f, args)
            m = row["runs"][f]
            print(
                f"{case['name']:>24} {f:>18}: {m['status']}"
                + (
                    f" {m['seconds']:.3f}s {fmt_bytes(m['peak_bytes'])}"
                    if m["status"] == "ok"
                    else f" {m.get('detail', '')}"
                )
                + f"  [{time.time() - t0:.0f}s wall]",
                flush=True,
            )
        results["rows"].append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out}.json/.md/.png")


if __name__ == "__main__":
    main()
