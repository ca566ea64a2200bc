"""Time and peak memory of one DiffPool level (forward + backward) against every peer, side by
side in one run.

What the pooling itself costs: every formulation gets the same batch of 20 graphs, the same
node embeddings Z (``--hidden`` channels, the output of whatever encoder runs before the
level) and the same assignment head, a ``Linear(hidden, C)`` on Z (its weights copied into
every formulation, so that all compute the same S), and pools with raw adjacencies
A' = S^T A S. The encoders are outside the level (they are the same for everyone); the full
training step, encoders included, is ``training_throughput.py``'s.

* ``ours_fixed``: :class:`diffpool.DiffPoolConv` (its ``head`` takes the Linear),
  C = ceil(ratio * largest graph of the dataset) clusters for every graph (the paper's rule);
* ``ours_per_graph``: the same layer with per-graph budgets ceil(ratio * N_g) (cap C);
* ``dense_batch_pad``: PyG's dense formulation padded to the batch's largest graph
  (``to_dense_batch`` + ``to_dense_adj`` + ``dense_diff_pool``), fixed C;
* ``dense_dataset_pad``: the same, padded to the dataset's largest graph (PyG's ``ToDense``
  example), fixed C. For synthetic batches the dataset is the batch, so it is not repeated;
* ``tgp_batched``, ``tgp_unbatched``: torch-geometric-pool's ``DiffPool`` (its MLP select is
  the Linear) with ``remove_self_loops=False, degree_norm=False`` (raw A'), in its batched
  (dense, padded to the batch) and unbatched (a loop over graphs, no padding) modes, fixed C.
  Needs ``pip install --no-build-isolation torch-geometric-pool`` (it compiles torch-scatter
  where no wheel matches torch); without it these columns say "not installed".

Every measurement runs in a fresh subprocess; the formulations alternate over ``--rounds``
rounds (a drift of this shared machine hits them alike) and the table takes the median
over rounds. Peak memory is measured during the first step as described in
``benchmarks/measure.py`` (peak RSS rise on CPU, ``max_memory_allocated`` on GPU). A round's
time is the median over repetitions after that first step (a single step when repetitions
would exceed ``--time-budget``).

    python benchmarks/pooling_level.py                # everything, writes benchmarks/out/
    python benchmarks/pooling_level.py --quick        # a small subset, for a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

from measure import (
    ARCHITECTURES,
    COMPILED,
    Deadline,
    Formulation,
    add_common_arguments,
    architecture_note,
    as_trained,
    available_formulations,
    base_name,
    best_peers,
    code_description,
    compile_cases,
    compile_module,
    compiled_step_begin,
    count_host_syncs,
    fmt_bytes,
    machine_description,
    peak_since,
    python,
    ratio_cell,
    reset_peak,
    run_architecture,
    scaling_plot,
    source_hash,
    steady_malloc,
    sync_note,
    tu_available,
    tu_dataset,
)

HERE = Path(__file__).resolve().parent
#: Every formulation and its architecture (``measure.ARCHITECTURES``). The level is timed on
#: given embeddings: each formulation computes S = softmax(Linear(Z)) from the Z that it pools,
#: which is the ``mlp`` architecture for all of them (the pooling GNN of ``gnn_pool``, where a
#: model has one, runs before the level: ``training_throughput.py`` times it). One of ours with
#: another option of the layer is one more entry: a name starting with ``ours``, its budget and
#: the layer's keyword arguments in ``options`` (they override the ones ``build`` passes).
FORMULATIONS = {
    "ours_fixed": Formulation("mlp", "ours", budget="fixed"),
    "ours_per_graph": Formulation("mlp", "ours", budget="per_graph"),
    # the same layers with validate=False: what the input checks cost (the table's last part)
    "ours_fixed_unvalidated": Formulation("mlp", "ours", "fixed", (("validate", False),)),
    "ours_per_graph_unvalidated": Formulation("mlp", "ours", "per_graph", (("validate", False),)),
    "dense_batch_pad": Formulation("mlp", "peer"),
    "dense_dataset_pad": Formulation("mlp", "peer"),
    "tgp_batched": Formulation("mlp", "peer"),
    "tgp_unbatched": Formulation("mlp", "peer"),
}
#: the name suffix of a layer timed without its input checks
UNVALIDATED = "_unvalidated"
REAL = ("MUTAG", "ENZYMES", "PROTEINS", "COLLAB", "DD")
SYNTHETIC = (25, 50, 100, 200, 400, 800, 2000)


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


def build(formulation: str, num_clusters: int, ratio: float, hidden: int, head):
    """The pooling level of ``formulation``, its assignment head a copy of ``head``."""
    import copy

    import torch

    spec = FORMULATIONS[formulation]
    if spec.role == "ours":
        from diffpool import DiffPoolConv

        class Passthrough(torch.nn.Module):
            def forward(self, x, edge_index):
                return x

        # built as a user builds it: every default (input validation included) kept
        kwargs = dict(
            embed=Passthrough(),
            pool=Passthrough(),
            num_clusters=num_clusters,
            ratio=ratio if spec.budget == "per_graph" else None,
            head=torch.nn.Linear(hidden, num_clusters),
        )
        layer = DiffPoolConv(**{**kwargs, **dict(spec.options)})
        layer.head.load_state_dict(head.state_dict())  # after the layer's reset_parameters
        return layer
    if formulation.startswith("tgp"):
        from tgp.poolers import DiffPool

        pool = DiffPool(
            hidden,
            num_clusters,
            remove_self_loops=False,
            degree_norm=False,
            batched=formulation == "tgp_batched",
        )
        (lin,) = pool.selector.mlp.lins  # PyG's Linear: weight [C, hidden], bias [C]
        with torch.no_grad():
            lin.weight.copy_(head.weight)
            lin.bias.copy_(head.bias)
        return pool
    module = torch.nn.Module()
    module.head = copy.deepcopy(head)
    return module


def pool(formulation: str, model, z, batch, dataset_max: int, skip_s: dict):
    """One pooling level's pooled ``x`` ``[B, C, F]``, ``adj`` ``[B, C, C]`` and summed
    auxiliary losses."""
    from torch_geometric.nn import dense_diff_pool
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    if FORMULATIONS[formulation].role == "ours":
        out = model(z, batch.edge_index, batch.batch, batch_size=batch.num_graphs, **skip_s)
        return out.x, out.adj, out.aux_loss
    if formulation.startswith("tgp"):
        out = model(x=z, adj=batch.edge_index, batch=batch.batch)
        return out.x, out.edge_index, sum(out.loss.values())
    pad = dataset_max if formulation == "dense_dataset_pad" else None
    x, mask = to_dense_batch(z, batch.batch, max_num_nodes=pad)
    adj = to_dense_adj(batch.edge_index, batch.batch, max_num_nodes=pad)
    x_out, adj_out, link, ent = dense_diff_pool(x, adj, model.head(x), mask)
    return x_out, adj_out, link + ent


def _step(formulation, model, z, batch, dataset_max, device, skip_s, compiled=None, sync=True):
    import torch

    compiled_step_begin(compiled)
    x, adj, aux = pool(formulation, model, z, batch, dataset_max, skip_s)
    (x.sum() + adj.sum() + aux).backward()
    if sync and device.type == "cuda":
        torch.cuda.synchronize()


def worker(args) -> dict:
    import torch

    case = json.loads(args.case)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, dataset_max = _load_batch(case, args.seed, args.batch_size, Path(args.cache))
    num_clusters = math.ceil(args.ratio * dataset_max)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(batch.num_nodes, args.hidden, generator=gen)
    head = torch.nn.Linear(args.hidden, num_clusters)
    model = build(args.formulation, num_clusters, args.ratio, args.hidden, head)
    model, batch, z = model.to(device), batch.to(device), z.to(device).requires_grad_()
    ours = FORMULATIONS[args.formulation].role == "ours"
    skip_s = as_trained(model.forward, "return_assignment") if ours else {}
    if args.compile:
        if not ours:
            raise SystemExit("--compile times our formulations only")
        model = compile_module(model, args.compile)
    step = functools.partial(
        _step, args.formulation, model, z, batch, dataset_max, device, skip_s, args.compile
    )
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
    step()
    first = time.perf_counter() - t0
    peak = peak_since(device, base)
    if device.type == "cpu":
        steady_malloc()
    # untimed steps (compilation, CUDA graphs recorded, the allocator's caches): the first
    # timed step is then a steady one
    probe = first
    for _ in range(args.warmup_steps):
        model.zero_grad(set_to_none=True)
        z.grad = None
        t0 = time.perf_counter()
        step()
        probe = time.perf_counter() - t0

    # At least --reps repetitions, more until --min-time has passed (millisecond steps need
    # hundreds of repetitions for a stable median on a shared machine).
    reps = args.reps if probe * args.reps < args.time_budget else 0
    times = [probe] if reps == 0 else []
    start = time.perf_counter()
    while reps and (
        len(times) < reps or (time.perf_counter() - start < args.min_time and len(times) < 2000)
    ):
        model.zero_grad(set_to_none=True)
        z.grad = None
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    model.zero_grad(set_to_none=True)
    z.grad = None
    syncs = dict(count=None, method=None, calls={})  # the CPU proxy sees no compiled code
    if not (args.compile and device.type == "cpu"):
        syncs = count_host_syncs(functools.partial(step, sync=False), device)
    return dict(
        info,
        seconds=times[len(times) // 2],
        reps=len(times),
        first_seconds=first,
        warmup_steps=args.warmup_steps,
        peak_bytes=int(peak),
        host_syncs=syncs["count"],
        host_sync_method=syncs["method"],
        host_sync_calls=syncs["calls"],
    )


# --------------------------------------------------------------------------- driver side
def run_one(case: dict, formulation: str, args, deadline: Deadline, compiled=None) -> dict:
    """One measurement in a fresh process: its record, with the formulation's architecture."""
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
        "--warmup-steps",
        str(args.warmup_steps),
    ]
    if compiled:
        cmd += ["--compile", compiled]
    result = deadline.run(cmd, args.timeout, args.threads)
    result["architecture"] = FORMULATIONS[formulation].architecture
    if compiled:
        result["compile"] = compiled
    return result


def measure_alternating(case, chosen, args, deadline, compiled=None) -> dict:
    """``chosen``'s measurements of ``case``, alternating over ``--rounds`` rounds, each
    reduced to the median of its rounds (keyed ``name+compiled`` for compiled ones)."""
    rounds: dict[str, list[dict]] = {f: [] for f in chosen}
    for r in range(args.rounds):  # alternating: every formulation once per round
        for f in chosen:
            if rounds[f] and rounds[f][-1]["status"] != "ok":
                continue  # it failed (timeout, memory, time budget): once is enough
            t0 = time.time()
            m = run_one(case, f, args, deadline, compiled)
            rounds[f].append(m)
            name = f + (COMPILED if compiled else "")
            print(
                f"{case['name']:>24} {name:>18} round {r + 1}: {m['status']}"
                + (f" {1e3 * m['seconds']:.2f} ms {fmt_bytes(m['peak_bytes'])}"
                   if m["status"] == "ok" else f" {m.get('detail', '')}")
                + f"  [{time.time() - t0:.0f}s wall]",
                flush=True,
            )  # fmt: skip
    suffix = COMPILED if compiled else ""
    return {f + suffix: median_of_rounds(rounds[f]) for f in chosen}


def cases(args):
    out = []
    for name in args.real:
        if tu_available(name, args.tu_dir):
            out.append(dict(kind="real", name=name, tu_dir=str(args.tu_dir)))
        else:
            print(f"skip {name}: {args.tu_dir}/{name}.zip not found", file=sys.stderr)
    out += [dict(kind="synthetic", name=f"synthetic N_max={n}", n_max=n) for n in args.synthetic]
    return out


def median_of_rounds(runs: list[dict]) -> dict:
    """One formulation's rounds as one measurement: the median time and peak over the rounds
    that ran (the first failure when none did)."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return runs[0]
    times = sorted(r["seconds"] for r in ok)
    peaks = sorted(r["peak_bytes"] for r in ok)
    return dict(ok[0], seconds=times[len(times) // 2], peak_bytes=peaks[len(peaks) // 2],
                rounds=len(ok), round_seconds=[r["seconds"] for r in ok])  # fmt: skip


def _architectures(results: dict) -> set[str]:
    return {
        run_architecture(f, m, FORMULATIONS)
        for row in results["rows"]
        for f, m in row["runs"].items()
    } - {None, "none"}


def write_markdown(results: dict, path: Path) -> None:
    meta = results["meta"]
    names = list(dict.fromkeys(f for row in results["rows"] for f in row["runs"]))
    cross = len(_architectures(results)) > 1  # a column against the other architecture
    compiled = f" `{COMPILED}`: ours under `torch.compile(mode={meta['compile']!r})`, " \
        f"timed after {meta.get('warmup_steps', 0)} untimed steps, measured after the eager " \
        "formulations." if meta.get("compile") else ""  # fmt: skip
    lines = [
        "# One DiffPool level against every peer: forward + backward, time and peak memory",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; device `{meta['device']}`; torch {meta['torch']}; "
        f"code {code_description(meta)}; {meta.get('threads', 1)} thread(s); "
        f"batch of {meta['batch_size']} graphs, ratio {meta['ratio']}; every formulation "
        f"pools the same embeddings Z ({meta['hidden']} channels) with the same "
        f"Linear({meta['hidden']}, C) assignment head; raw A' = S^T A S; ours built with "
        "the layer's defaults (input validation on).  ",
        f"Times are medians over {meta.get('rounds', 1)} alternating rounds (each the median "
        "of its repetitions). Ratios are the fastest / smallest peer's figure over ours "
        "(> 1: ours is faster / smaller), against the peers of the same architecture only; "
        "the peer is named.  ",
        "Architectures: " + architecture_note(FORMULATIONS, names) + " The level is timed on "
        "given embeddings, so every formulation here assigns with a head on the Z it pools; "
        "a pooling GNN runs before the level (`training_throughput.py` times it)." + compiled,
        sync_note(meta),
    ]
    if meta.get("skipped"):
        lines.append(
            f"Time budget (`--deadline {meta['deadline']:g}` s): {meta['skipped']} "
            "measurement(s) did not run, marked *skipped (time budget)*."
        )
    head = (
        "| batch | C (fixed) | N_max batch / dataset | formulation | architecture | time (ms) "
        "| peak memory | speed vs fastest peer (same architecture) | memory vs smallest peer "
        "(same architecture) |"
        + (" speed vs fastest peer of another architecture |" if cross else "")
        + " host syncs |"
    )
    lines += ["", head, "|---" * head.count(" |") + "|"]
    for row in results["rows"]:
        for f, m in row["runs"].items():
            arch = run_architecture(f, m, FORMULATIONS) or ""
            if m["status"] != "ok":
                detail = m.get("detail", "")
                cells = ["", "", ""] + ([""] if cross else []) + [""]
                lines.append(
                    f"| {row['case']} | | | {f} | {arch} | {m['status']} {detail} | "
                    + " | ".join(cells) + " |"
                )  # fmt: skip
                continue
            speed = mem = other = ""
            if FORMULATIONS[base_name(f)].role == "ours":
                fastest, fastest_other = best_peers(row["runs"], f, "seconds", FORMULATIONS)
                smallest, _ = best_peers(row["runs"], f, "peak_bytes", FORMULATIONS)
                speed = ratio_cell(fastest, m["seconds"])
                mem = ratio_cell(smallest, max(m["peak_bytes"], 1))
                other = ratio_cell(fastest_other, m["seconds"])
            syncs = "" if m.get("host_syncs") is None else m["host_syncs"]
            lines.append(
                f"| {row['case']} | {m['num_clusters']} | {m['batch_max_nodes']} / "
                f"{m['dataset_max_nodes']} | {f} | {arch} | {1e3 * m['seconds']:.2f} | "
                f"{fmt_bytes(m['peak_bytes'])} | {speed} | {mem} |"
                + (f" {other} |" if cross else "")
                + f" {syncs} |"
            )
    lines += _validation_cost(results)
    path.write_text("\n".join(lines) + "\n")


def _validation_cost(results: dict) -> list[str]:
    """What the input checks cost: each of ours with its defaults over the same layer with
    ``validate=False``, paired round by round (both ran in each alternating round): the median
    of the rounds' ratios and their range."""
    lines = []
    for row in results["rows"]:
        for f, m in row["runs"].items():
            off = row["runs"].get(f + UNVALIDATED)
            if m.get("status") == "ok" and off and off.get("status") == "ok":
                on, unvalidated = m.get("round_seconds"), off.get("round_seconds")
                if not on or not unvalidated or len(on) != len(unvalidated):  # not paired
                    on, unvalidated = [m["seconds"]], [off["seconds"]]
                ratios = sorted(a / b - 1 for a, b in zip(on, unvalidated))
                spread = f" ({ratios[0]:+.1%} to {ratios[-1]:+.1%})" if len(ratios) > 1 else ""
                cost = statistics.median(ratios)
                lines.append(f"| {row['case']} | {f} | {cost:+.1%}{spread} |")
    if not lines:
        return []
    return [
        "",
        "Input validation (the layer's default) against the same layer with `validate=False`: "
        "the time it adds to the pooling step, the median over the rounds of each round's "
        "ratio (both ran in every round), and the range over the rounds.",
        "",
        "| batch | formulation | validation's cost (range over the rounds) |",
        "|---|---|---|",
        *lines,
    ]


def plot(results: dict, path: Path) -> None:
    rows = [r for r in results["rows"] if r["kind"] == "synthetic"]
    if not rows:
        return
    scaling_plot(
        rows,
        list(dict.fromkeys(f for row in rows for f in row["runs"])),
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
    p.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per case (median over them)"
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="untimed steps after the first (compilation, CUDA graphs, caches)",
    )
    p.add_argument("--quick", action="store_true", help="ENZYMES + N_max 50/200 only, 1 round")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.real, args.synthetic, args.reps, args.min_time = ["ENZYMES"], [50, 200], 2, 0.3
        args.rounds = 1
    unknown = [f for f in args.formulations if f not in FORMULATIONS]
    if unknown:
        p.error(f"unknown formulations {unknown}; choose from {list(FORMULATIONS)}")
    deadline = Deadline(args.deadline)
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
            rounds=args.rounds,
            threads=args.threads,
            warmup_steps=args.warmup_steps,
            compile=args.compile,
            deadline=args.deadline,
            architectures={a: ARCHITECTURES[a] for a in
                           dict.fromkeys(FORMULATIONS[f].architecture for f in args.formulations)},
            source_sha256=source_hash(),
            date=time.strftime("%Y-%m-%d"),
        ),
        rows=[],
    )  # fmt: skip
    formulations = available_formulations(args.formulations)
    ours = [f for f in formulations if FORMULATIONS[f].role == "ours" and UNVALIDATED not in f]
    todo = cases(args)
    for case in todo:
        chosen = [f for f in formulations
                  if not (f == "dense_dataset_pad" and case["kind"] == "synthetic")]  # fmt: skip
        row = dict(case=case["name"], kind=case["kind"], n_max=case.get("n_max"), runs={})
        row["runs"] = measure_alternating(case, chosen, args, deadline)
        for f in args.formulations:
            if f not in row["runs"] and f.startswith("tgp"):
                row["runs"][f] = dict(status="not installed", architecture="mlp")
        results["rows"].append(row)
    if args.compile:  # after every eager measurement: a long compilation cannot crowd them out
        for case in compile_cases(todo, args.compile_on):
            row = next(r for r in results["rows"] if r["case"] == case["name"])
            row["runs"].update(measure_alternating(case, ours, args, deadline, args.compile))
    results["meta"]["skipped"] = sum(
        m["status"] == Deadline.SKIPPED for row in results["rows"] for m in row["runs"].values()
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out}.json/.md/.png")


if __name__ == "__main__":
    main()
