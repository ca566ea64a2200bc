"""The pooling planner's layouts side by side: one pooling level, forward + backward, with each
layout forced, and the model's factored coarse adjacency on and off (issue #42, point 2).

What is timed:

* **layouts**: :class:`diffpool.DiffPoolConv` built as a user builds it
  (``DiffPoolConv.from_encoder("sage", F, 64, C, ratio=...)``, every default kept, input
  validation included), called with ``return_assignment=False`` as the training step calls it,
  forward + backward of ``x.sum() + adj.sum() + aux_loss``, over a fixed set of batches of 20
  graphs (the same batches, the same layer, for every layout), with ``layout=`` each of
  ``"auto"`` (what :func:`diffpool.functional._plan.plan_sparse` picks; the pick of every
  batch is recorded), ``"padded"``, ``"sparse"`` and, with per-graph budgets,
  ``"per_bucket"``. Budgets: fixed (``ratio=None``, ``C = ceil(0.25 * N_max)`` of the
  dataset) and per-graph (``ratio=0.25``, the same cap). A cell whose blocks would need more
  than ``--max-gib`` (estimated from the batches' sizes) is skipped and says so.
* **factored**: :class:`diffpool.DiffPoolNet` (``build_model("diffpool", F, classes, N_max,
  budget="fixed", ratio=0.25)``), a training step (forward with ``return_assignments=False,
  return_levels=False``, cross-entropy + auxiliary loss, backward) with
  ``model.factor_coarse_adj`` ``True`` and ``False`` on the same instance and batches.

How: one process, one thread (``torch.set_num_threads(1)``), CPU time of the process
(``time.process_time()``, not wall time: other processes share the cores). A round times each
configuration over all of the case's batches, the configurations alternating batch by batch
(A, B, C on a batch, B, C, A on the next, ...: a drift of the shared machine's speed hits them
alike), for ``--rounds`` rounds after one warm-up round, and a cell reports the median over
rounds and their spread (min-max). A
configuration *wins* a case where its median beats every other's by more than the spread: its
slowest round is faster than every other configuration's fastest round.

    python benchmarks/layouts.py --out benchmarks/results/layouts   # the table, ~20 minutes
    python benchmarks/layouts.py --quick --out /tmp/layouts         # MUTAG, 2 rounds, < 60 s
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import code_description, machine_description, source_hash, tu_dataset

HERE = Path(__file__).resolve().parent
DATASETS = ("MUTAG", "ENZYMES", "PROTEINS", "DD")
LAYOUTS = ("auto", "padded", "sparse", "per_bucket")
BUDGETS = ("fixed", "per_graph")
FACTORED = ("factored", "unfactored")
RATIO = 0.25
HIDDEN = 64
BATCH_SIZE = 20
#: batches timed per dataset (the same in every round); D&D's steps are long
BATCHES = {"MUTAG": 10, "ENZYMES": 10, "PROTEINS": 10, "DD": 3}
#: passes over the batches in one round, so that a round of the small datasets lasts long
#: enough for the CPU clock's noise to be small against it
PASSES = {"MUTAG": 6, "ENZYMES": 4, "PROTEINS": 2, "DD": 1}
#: batches of the factored model's training step (fixed budgets)
FACTORED_BATCHES = {"PROTEINS": 10, "DD": 2}
SKIPPED_MEMORY = "skipped (memory)"


# --------------------------------------------------------------------------- data
def batches_of(dataset, count: int, seed: int):
    """``count`` batches of :data:`BATCH_SIZE` graphs drawn without replacement (a seeded
    permutation), the first one holding the dataset's largest graph (the batch that sets an
    epoch's peak memory and, on D&D, much of its time): the same batches for every
    configuration and round."""
    import torch
    from torch_geometric.data import Batch

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen).tolist()
    sizes = [int(n) for n in _graph_sizes(dataset)]
    largest = order.index(max(range(len(sizes)), key=sizes.__getitem__))
    order[0], order[largest] = order[largest], order[0]
    count = min(count, len(order) // BATCH_SIZE)
    return [
        Batch.from_data_list([dataset[g] for g in order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]])
        for i in range(count)
    ]


def _graph_sizes(dataset):
    slices = dataset.slices.get("x")
    if slices is not None and getattr(dataset, "_indices", None) is None:
        return slices.diff().tolist()
    return [data.num_nodes for data in dataset]


def batch_counts(batch) -> list[int]:
    return batch.batch.bincount(minlength=batch.num_graphs).tolist()


# --------------------------------------------------------------------------- memory estimate
def estimated_bytes(layout: str, counts: list[int], num_slots: int, ratio, features: int) -> int:
    """A rough upper estimate of what one step of ``layout`` holds at once on this batch:
    the adjacency blocks (``"padded"``: one ``[B, N, N]`` block; ``"dense"``: one
    ``[b, n, n]`` block per size bucket) and the ``[*, n, C]`` blocks of S, A S and their
    gradients, float32, with a factor 3 for temporaries (the padded ``[B, N, N]`` block also
    goes through a dense product and its backward)."""
    from diffpool.functional._plan import BatchShape, size_buckets

    shape = BatchShape(counts, 0, features, num_slots, ratio)
    if layout == "padded":
        blocks = [(len(counts), max(counts))]
    else:
        buckets, heads = size_buckets(shape)
        blocks = [(len(g), n) for g, n in zip(buckets, heads)]
    adjacency = sum(b * n * n for b, n in blocks) if layout == "padded" else 0
    rows = sum(b * n * (shape.width(n) + features) for b, n in blocks)
    return 4 * 3 * (adjacency + 4 * rows)


# --------------------------------------------------------------------------- the level
def build_level(features: int, num_clusters: int, budget: str, seed: int):
    import torch

    from diffpool import DiffPoolConv

    torch.manual_seed(seed)
    ratio = RATIO if budget == "per_graph" else None
    return DiffPoolConv.from_encoder("sage", features, HIDDEN, num_clusters, ratio=ratio)


def level_step(layer, batch, layout: str) -> None:
    """One pooling level, forward + backward, with ``layout`` forced."""
    layer.zero_grad(set_to_none=True)
    out = layer(
        batch.x,
        batch.edge_index,
        batch.batch,
        batch_size=batch.num_graphs,
        return_assignment=False,
        layout=layout,
    )
    (out.x.sum() + out.adj.sum() + out.aux_loss).backward()


def planned(layer, batch) -> dict:
    """What ``layout="auto"`` runs on ``batch``: the planner's plan, read by wrapping the
    planner for one untimed call (its layout, buckets, widths)."""
    from diffpool.functional import diff_pool

    seen = []
    original = diff_pool.plan_sparse

    def recording(*args, **kwargs):
        plan = original(*args, **kwargs)
        seen.append(plan)
        return plan

    diff_pool.plan_sparse = recording
    try:
        level_step(layer, batch, "auto")
    finally:
        diff_pool.plan_sparse = original
    (plan,) = seen
    return dict(
        layout=plan.layout,
        buckets=None if plan.buckets is None else len(plan.buckets),
        heads=plan.heads,
        widths=plan.widths,
    )


# --------------------------------------------------------------------------- the model
def build_model(features: int, num_classes: int, max_nodes: int, seed: int):
    import torch

    from diffpool.models import build_model as build

    torch.manual_seed(seed)
    model = build("diffpool", features, num_classes, max_nodes, budget="fixed", ratio=RATIO)
    model.train()
    return model


def model_step(model, batch, factored: bool) -> None:
    """One training step of the model (no optimizer step: every configuration and round sees
    the same weights), the coarse adjacency factored or not."""
    import torch.nn.functional as F

    model.factor_coarse_adj = factored
    model.zero_grad(set_to_none=True)
    out = model(
        batch.x,
        batch.edge_index,
        batch.batch,
        batch_size=batch.num_graphs,
        return_assignments=False,
        return_levels=False,
    )
    (F.cross_entropy(out.logits, batch.y) + out.aux_loss).backward()


def factored_groups(model, batch) -> list[bool] | None:
    """Which size buckets of ``batch`` the first level keeps factored (the planner's
    ``Plan.factored``), read by wrapping the planner for one untimed step."""
    from diffpool.functional import diff_pool

    seen = []
    original = diff_pool.plan_sparse

    def recording(*args, **kwargs):
        plan = original(*args, **kwargs)
        seen.append(plan)
        return plan

    diff_pool.plan_sparse = recording
    try:
        model_step(model, batch, True)
    finally:
        diff_pool.plan_sparse = original
    return seen[0].factored if seen else None


# --------------------------------------------------------------------------- timing
def alternate(configs: dict, batches, rounds: int, label: str, passes: int = 1) -> dict:
    """CPU seconds of every configuration over ``passes`` passes over all ``batches``, per
    round: one warm-up round, then ``rounds`` rounds. The configurations alternate batch by
    batch (A, B, C on a batch, then B, C, A on the next, ...), so that a drift of the shared
    machine's speed, which lasts seconds, hits them alike; every configuration gets the same
    dropout masks on a batch."""
    import torch

    seconds = {name: [] for name in configs}
    names = list(configs)
    for r in range(rounds + 1):
        spent = dict.fromkeys(names, 0.0)
        step_index = 0
        for _ in range(passes):
            for batch in batches:
                shift = (r + step_index) % len(names)
                for name in names[shift:] + names[:shift]:
                    torch.manual_seed(1000 * r + step_index)
                    start = time.process_time()
                    configs[name](batch)
                    spent[name] += time.process_time() - start
                step_index += 1
        if r > 0:
            for name in names:
                seconds[name].append(spent[name])
        done = "warm-up" if r == 0 else f"round {r}/{rounds}"
        print(f"  {label} {done}: " + ", ".join(f"{n} {spent[n]:.3f}s" for n in names),
              file=sys.stderr, flush=True)  # fmt: skip
    return seconds


def summarise(seconds: dict) -> dict:
    """Per configuration: median, min, max and quartiles over rounds; the ratios to ``auto``
    (where timed) and to the best median, of the medians and per round (paired: the rounds
    alternate, so a drift of the machine's speed hits a round's configurations alike); and
    whether it wins beyond the spread (:func:`mark_wins`)."""
    cells = {}
    for name, values in seconds.items():
        q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
        cells[name] = dict(
            status="ok",
            rounds=values,
            median=statistics.median(values),
            min=min(values),
            max=max(values),
            q1=q[0],
            q3=q[2],
        )
    best = min(c["median"] for c in cells.values())
    auto = cells.get("auto")
    for c in cells.values():
        c["vs_best"] = c["median"] / best
        c["vs_auto"] = c["median"] / auto["median"] if auto else None
        if auto:
            per_round = [t / a for t, a in zip(c["rounds"], auto["rounds"])]
            c["vs_auto_rounds"] = [min(per_round), statistics.median(per_round), max(per_round)]
    mark_wins(cells)
    return cells


def _beats(c: dict, o: dict) -> bool:
    """Beyond the spread: ``c``'s slowest round beats ``o``'s fastest."""
    return c["max"] < o["min"]


def _beats_every_round(c: dict, o: dict) -> bool:
    """Paired: ``c`` is faster than ``o`` in every round."""
    return all(a < b for a, b in zip(c["rounds"], o["rounds"]))


def mark_wins(cells: dict) -> None:
    """``wins``: beyond the spread against every other configuration; for the forced layouts
    also ``wins_among_forced`` (``auto`` left out: it runs one of them); ``every_round``: the
    same, paired, faster in every round (a weaker test, which a drift of the machine's speed
    between rounds does not hide)."""
    ok = {n: c for n, c in cells.items() if c.get("status") == "ok"}
    forced = {n: c for n, c in ok.items() if n != "auto"}
    for name, c in ok.items():
        others = [o for n, o in ok.items() if n != name]
        rivals = [o for n, o in forced.items() if n != name]
        c["wins"] = bool(others) and all(_beats(c, o) for o in others)
        c["every_round"] = bool(others) and all(_beats_every_round(c, o) for o in others)
        if name != "auto":
            c["wins_among_forced"] = bool(rivals) and all(_beats(c, o) for o in rivals)
            c["every_round_among_forced"] = bool(rivals) and all(
                _beats_every_round(c, o) for o in rivals
            )


def wins_except_auto(cells: dict) -> dict:
    """Per forced layout, whether it beats every other forced layout beyond the spread."""
    mark_wins(cells)
    return {n: c["wins_among_forced"] for n, c in cells.items() if "wins_among_forced" in c}


def analyse(results: dict) -> None:
    """Recompute every derived figure from the rounds' seconds (``--report-only``)."""
    for row in results["layouts"] + results.get("factored", []):
        ok = {n: c["rounds"] for n, c in row["cells"].items() if c.get("status") == "ok"}
        cells = summarise(ok)
        row["cells"] = {n: cells.get(n, c) for n, c in row["cells"].items()}


# --------------------------------------------------------------------------- the run
def run_layouts(name, dataset, max_nodes, args) -> list[dict]:
    features = dataset.num_features
    num_clusters = math.ceil(RATIO * max_nodes)
    batches = batches_of(dataset, args.batches.get(name, 10), args.seed)
    rows = []
    for budget in args.budgets:
        layer = build_level(features, num_clusters, budget, args.seed)
        ratio = RATIO if budget == "per_graph" else None
        layouts = [lay for lay in args.layouts if lay != "per_bucket" or budget == "per_graph"]
        picks = [planned(layer, b) for b in batches]
        configs, skipped = {}, {}
        for layout in layouts:
            need = 0
            if layout != "auto":
                for b in batches:
                    counts = batch_counts(b)
                    slots = num_clusters if ratio is None else min(
                        num_clusters, math.ceil(RATIO * max(counts)))  # fmt: skip
                    need = max(need, estimated_bytes(layout, counts, slots, ratio, HIDDEN))
            if need > args.max_gib * 2**30:
                skipped[layout] = dict(status=SKIPPED_MEMORY, estimated_bytes=need)
                continue
            configs[layout] = lambda b, lay=layout, m=layer: level_step(m, b, lay)
        label = f"{name} {budget}"
        passes = args.passes.get(name, 1)
        cells = summarise(alternate(configs, batches, args.rounds, label, passes))
        cells.update(skipped)
        rows.append(
            dict(
                dataset=name,
                budget=budget,
                num_clusters=num_clusters,
                max_nodes=max_nodes,
                features=features,
                batches=len(batches),
                passes=passes,
                batch_max_nodes=[max(batch_counts(b)) for b in batches],
                auto_picks=picks,
                cells={lay: cells[lay] for lay in layouts},
            )
        )
    return rows


def run_factored(name, dataset, max_nodes, args) -> dict:
    batches = batches_of(dataset, args.factored_batches.get(name, 2), args.seed)
    model = build_model(dataset.num_features, dataset.num_classes, max_nodes, args.seed)
    groups = [factored_groups(model, b) for b in batches]
    configs = {
        "factored": lambda b: model_step(model, b, True),
        "unfactored": lambda b: model_step(model, b, False),
    }
    cells = summarise(alternate(configs, batches, args.rounds, f"{name} factored"))
    return dict(
        dataset=name,
        budget="fixed",
        num_clusters=math.ceil(RATIO * max_nodes),
        max_nodes=max_nodes,
        batches=len(batches),
        factored_buckets=[None if g is None else f"{sum(g)}/{len(g)}" for g in groups],
        cells=cells,
    )


# --------------------------------------------------------------------------- the table
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _ratio_range(c: dict) -> str:
    lo, _, hi = c.get("vs_auto_rounds") or (None, None, None)
    return "" if lo is None else f"{lo:.2f}–{hi:.2f}x"


def _mark(c: dict) -> str:
    if c["wins"]:
        return "**wins**"
    if c.get("wins_among_forced"):
        return "**wins** among forced (auto runs it too)"
    if c.get("every_round") or c.get("every_round_among_forced"):
        return "faster every round" + ("" if c.get("every_round") else " among forced")
    return ""


def _cell_row(layout: str, c: dict, per: int) -> str:
    if c["status"] != "ok":
        gib = c.get("estimated_bytes", 0) / 2**30
        return f"| {layout} | {c['status']}: est. {gib:,.1f} GiB | | | | | |"
    spread = f"{_ms(c['min'] / per)}–{_ms(c['max'] / per)}"
    auto = "" if c["vs_auto"] is None else f"{c['vs_auto']:.2f}x"
    median = _ms(c["median"] / per)
    return (
        f"| {layout} | {median} | {spread} | {auto} | {_ratio_range(c)} | "
        f"{c['vs_best']:.2f}x | {_mark(c)} |"
    )


def _picks(row: dict) -> str:
    counts: dict = {}
    for p in row["auto_picks"]:
        counts[p["layout"]] = counts.get(p["layout"], 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def verdict(results: dict) -> dict:
    """Per configuration, the cases where it wins beyond the spread (among the forced
    layouts: ``auto`` runs one of them, so it ties with its pick), and apart, the cases where
    it is only faster in every round (paired)."""
    found: dict = {lay: ([], []) for lay in LAYOUTS}
    found.update({"factored": ([], []), "unfactored": ([], [])})
    for row in results["layouts"]:
        case = f"{row['dataset']} {row['budget'].replace('_', '-')}"
        for lay, c in row["cells"].items():
            if c.get("status") != "ok":
                continue
            beyond = c["wins"] if lay == "auto" else c.get("wins_among_forced")
            paired = c["every_round"] if lay == "auto" else c.get("every_round_among_forced")
            rivals = [o for n, o in row["cells"].items() if n not in ("auto", lay)]
            rivals = [o for o in rivals if o.get("status") == "ok"]
            best = min(rivals, key=lambda o: o["median"], default=None)
            gain = f" ({best['median'] / c['median']:.2f}x the next)" if best else ""
            if beyond:
                found[lay][0].append(case + gain)
            elif paired:
                found[lay][1].append(case + gain)
    for row in results.get("factored", []):
        for name, c in row["cells"].items():
            other = next(o for n, o in row["cells"].items() if n != name)
            gain = f" ({other['median'] / c['median']:.2f}x)"
            if c["wins"]:
                found[name][0].append(f"{row['dataset']} fixed, training step" + gain)
            elif c["every_round"]:
                found[name][1].append(f"{row['dataset']} fixed, training step" + gain)
    return found


def auto_slower(results: dict) -> list[str]:
    """Cases where ``auto`` is slower than a forced layout beyond the spread, or in every
    round (paired)."""
    notes = []
    for row in results["layouts"]:
        cells = {n: c for n, c in row["cells"].items() if c.get("status") == "ok"}
        auto = cells.get("auto")
        if auto is None:
            continue
        per = row["batches"] * row.get("passes", 1)
        for lay, c in cells.items():
            if lay == "auto" or not _beats_every_round(c, auto):
                continue
            how = "beyond the spread" if _beats(c, auto) else "in every round, within the spread"
            notes.append(
                f"{row['dataset']} {row['budget'].replace('_', '-')}: auto ({_picks(row)}) "
                f"{_ms(auto['median'] / per)} ms vs {lay} {_ms(c['median'] / per)} ms a batch "
                f"({c['vs_auto']:.2f}x; per round {_ratio_range(c)}), {how}"
            )
    return notes


def write_markdown(results: dict, path: Path) -> None:
    analyse(results)
    meta = results["meta"]
    lines = [
        "# Pooling layouts side by side",
        "",
        'One pooling level, forward + backward (`DiffPoolConv.from_encoder("sage", F, 64, C, '
        "ratio=...)`, the defaults kept, validation on, `return_assignment=False`; loss "
        "`x.sum() + adj.sum() + aux_loss`), each layout forced with `layout=`, on the same "
        f"batches of {BATCH_SIZE} graphs; and `DiffPoolNet`'s training step (fixed budgets, "
        "`return_levels=False`) with `factor_coarse_adj` on and off. CPU time of the process "
        "(`time.process_time()`), one thread, per batch: the median over "
        f"{meta['rounds']} rounds (after a warm-up round; within a round the layouts "
        "alternate batch by batch, each batch starting with the next layout) of a round's "
        "time over the case's batches divided by batches × passes, and the rounds' min–max; "
        "the first batch holds the dataset's largest graph. "
        "Fixed: `ratio=None`, C = ceil(0.25 · N_max of the dataset); per-graph: "
        "`ratio=0.25`, the same cap. `vs auto`: the medians' ratio; `per round`: the same "
        "round's ratio, min–max over rounds (paired: a drift of the machine's speed between "
        "rounds hits both alike). **wins**: its slowest round is faster than every other "
        "layout's fastest (among the forced layouts: `auto` runs one of them and ties with "
        "it); *faster every round*: the weaker, paired test.",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}, torch {meta['torch']}, {meta['threads']} thread",
        f"- code: {code_description(meta)}, {meta['date']}",
        "",
    ]
    for row in results["layouts"]:
        per = row["batches"] * row.get("passes", 1)
        lines += [
            f"## {row['dataset']}, {row['budget'].replace('_', '-')} budgets",
            "",
            f"C = {row['num_clusters']} (N_max {row['max_nodes']}), F = {row['features']}, "
            f"{row['batches']} batches × {row.get('passes', 1)} passes a round (largest graph "
            "per batch: "
            f"{', '.join(map(str, row['batch_max_nodes']))}); auto picks: {_picks(row)}.",
            "",
            "| layout | ms / batch (median) | min–max | vs auto | per round | vs best | |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += [_cell_row(lay, c, per) for lay, c in row["cells"].items()]
        lines.append("")
    if results.get("factored"):
        lines += [
            "## The factored coarse adjacency (`DiffPoolNet`, fixed budgets, training step)",
            "",
            "Factored buckets: the first level's size buckets that keep their coarsened "
            "adjacency as its factors, per batch (`None`: none, both configurations run the "
            "same code).",
            "",
            "| dataset | C | batches | factored buckets per batch | configuration | "
            "ms / batch (median) | min–max | vs best | |",
            "|---|---:|---:|---|---|---:|---:|---:|---|",
        ]
        for row in results["factored"]:
            per = row["batches"]
            buckets = ", ".join(str(g) for g in row["factored_buckets"])
            for name, c in row["cells"].items():
                lines.append(
                    f"| {row['dataset']} | {row['num_clusters']} | {per} | {buckets} | {name} | "
                    f"{_ms(c['median'] / per)} | {_ms(c['min'] / per)}–{_ms(c['max'] / per)} | "
                    f"{c['vs_best']:.2f}x | {_mark(c)} |"
                )
        lines.append("")
    lines += ["## Verdict", ""]
    for name, (beyond, paired) in verdict(results).items():
        text = "; ".join(beyond) if beyond else "never wins beyond the spread"
        if name == "auto":
            text = ("wins beyond the spread: " + text) if beyond else text
            text += " (it runs one of the forced layouts, so it can at best tie with its pick)"
        if paired:
            text += "; faster in every round only (within the spread): " + "; ".join(paired)
        lines.append(f"- `{name}`: {text}")
    slower = auto_slower(results)
    lines += ["", "Where `auto` is slower than a forced layout:", ""]
    lines += [f"- {s}" for s in slower] or ["- nowhere (in every round)"]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--budgets", nargs="*", default=list(BUDGETS), choices=BUDGETS)
    p.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=LAYOUTS)
    p.add_argument("--factored-on", nargs="*", default=list(FACTORED_BATCHES))
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    p.add_argument("--batches", type=int, help="batches per dataset (default: BATCHES)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-gib", type=float, default=4.0, help="skip cells estimated above")
    p.add_argument("--tu-dir", default=str(HERE.parent.parent / "shared" / "data" / "TU"))
    p.add_argument("--cache", help="where the zips are extracted (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="MUTAG only, 2 rounds (< 60 s)")
    p.add_argument("--out", default=str(HERE / "out" / "layouts"), help="writes OUT.json, OUT.md")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json")
    args = p.parse_args(argv)
    if args.report_only:
        out = Path(args.out)
        results = json.loads(out.with_suffix(".json").read_text())
        write_markdown(results, out.with_suffix(".md"))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        print(f"wrote {out}.md")
        return
    if args.quick:
        args.datasets, args.rounds, args.factored_on = ["MUTAG"], 2, ["MUTAG"]
        args.batches = args.batches or 3
    args.factored_batches = dict(FACTORED_BATCHES)
    args.batches = BATCHES if args.batches is None else dict.fromkeys(DATASETS + ("MUTAG",),
                                                                      args.batches)  # fmt: skip
    args.passes = dict(PASSES)
    if args.quick:
        args.factored_batches, args.passes = {"MUTAG": 3}, {"MUTAG": 2}
    import torch

    from diffpool.utils.provenance import provenance

    torch.set_num_threads(1)
    results = dict(
        meta=dict(
            command="python benchmarks/layouts.py " + " ".join(argv or sys.argv[1:]),
            machine=machine_description("cpu"),
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            provenance=provenance(),
            source_sha256=source_hash(),
            date=time.strftime("%Y-%m-%d"),
            rounds=args.rounds,
            batch_size=BATCH_SIZE,
            ratio=RATIO,
            hidden=HIDDEN,
            seed=args.seed,
            clock="time.process_time (CPU seconds of the process)",
        ),
        layouts=[],
        factored=[],
    )
    with tempfile.TemporaryDirectory(prefix="layouts-") as tmp:
        cache = Path(args.cache or tmp)
        for name in args.datasets:
            dataset, max_nodes = tu_dataset(name, args.tu_dir, cache)
            results["layouts"] += run_layouts(name, dataset, max_nodes, args)
            if name in args.factored_on:
                results["factored"].append(run_factored(name, dataset, max_nodes, args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))
    print(f"wrote {out}.json/.md")


if __name__ == "__main__":
    main()
