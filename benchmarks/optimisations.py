"""What each optimisation bought: a benchmark run on the code before and after the change.

Every entry of :data:`OPTIMISATIONS` names a change by the commits just before and just after
it, and the benchmark of this checkout that shows its effect (``pooling_level.py`` for one
pooling level, ``training_throughput.py`` for whole training epochs). Each side's ``src/`` is
checked out as a git worktree under ``--cache`` and put first on ``PYTHONPATH``, so the same
benchmark script times both; the sides alternate (before, after, before, after, ...) so that a
drift of this shared machine hits both alike. The table gives each side's median over the
repeats, the speed-up (before / after, > 1 means the change made it faster) and the peak memory
ratio, in ``benchmarks/results/optimisations.{json,md}``.

    python benchmarks/optimisations.py                          # every recorded change
    python benchmarks/optimisations.py --only narrowed-pool-head --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from measure import fmt_bytes, machine_description

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Whole training epochs with per-graph budgets on the real datasets (no scaling rows), one
#: run per call: this script repeats the calls itself, alternating the two sides.
EPOCHS_PER_GRAPH = [
    "--real",
    "ENZYMES",
    "PROTEINS",
    "DD",
    "--scaling",
    "--formulations",
    "ours_per_graph",
    "--repeats",
    "1",
]

#: The recorded optimisations, oldest first: what changed, where the profile pointed, and how
#: to measure it. ``before`` and ``after`` are commits (``after`` includes every commit of the
#: change).
OPTIMISATIONS = [
    {
        "key": "bucket-cluster-slots",
        "before": "01bdb50^",
        "after": "1a597e9",
        "what": "Per-graph budgets: each size bucket of graphs multiplies only its own cluster "
        "slots (S^T Z, S^T A S, the link and Gram terms) instead of all C slots of the batch.",
        "why": "With per-graph budgets a graph of N_g nodes uses ceil(ratio * N_g) of the C "
        "cluster slots, the rest of its assignment being zero: on a D&D batch (C = 1437, "
        "graphs of 284 nodes on average) the C-wide products multiplied zeros almost "
        "everywhere.",
        "benchmark": "pooling_level.py",
        "args": ["--real", "PROTEINS", "DD", "--synthetic", "--formulations", "ours_per_graph"],
    },
    {
        "key": "one-matmul-per-bucket",
        "before": "dc33d78^",
        "after": "dc33d78",
        "what": "One gather of [S | Z | AS] and one batched matmul per size bucket give both "
        "S^T Z and S^T (AS), the Gram norm reuses the gathered blocks of S, gathers use "
        "index_select, and buckets are merged when one more bucket would cost more than the "
        "padding it saves.",
        "why": "Before, S^T Z and S^T (AS) and the Gram norm each gathered S again and ran "
        "their own matmul per bucket, with advanced indexing (its backward is index_put's "
        "sorting accumulate; index_select's is a scatter-add), and every small bucket paid a "
        "fixed per-call cost of its own.",
        "benchmark": "pooling_level.py",
        "args": [
            "--real",
            "ENZYMES",
            "PROTEINS",
            "DD",
            "--synthetic",
            "--formulations",
            "ours_fixed",
            "ours_per_graph",
        ],
    },
    {
        "key": "narrowed-pool-head",
        "before": "cedb494",
        "after": "1bbbd00",
        "what": "Per-graph budgets: the pooling GNN's final linear map computes only the first "
        "C_g of its C outputs for each size bucket (sparse level) and only the slots the batch "
        "uses (dense levels), instead of all C for every node.",
        "why": "training_throughput.py's phase breakdown put D&D per-graph at 27% encoders "
        "and 59% backward. The pooling GNN's last layer maps the 3 x 64 concatenated channels "
        "to C = 1437 logits: 276k multiply-adds a node, against about 8k for a 64-channel "
        "SAGE layer, and the logits past a graph's C_g are masked out after it.",
        "benchmark": "training_throughput.py",
        "args": EPOCHS_PER_GRAPH,
    },
    {
        "key": "dense-assignment-on-request",
        "before": "17b4232",
        "after": "8aac1d5",
        "what": "The sparse level builds its dense [B, N_max, C] assignment S only when asked "
        "(return_assignment=True, the default for direct calls, or the BCE link loss); the "
        "training step does not ask for it.",
        "why": "The training step never reads S (the pooled graph and the losses come from "
        "the flat [N, C] assignment and the size buckets), yet every forward filled it: on "
        "the D&D batch holding the 5,748-node graph, 20 x 5,748 x 1,437 floats (about 660 MB, "
        "the forward's largest tensor), nearly all padding. It is freed before the backward, "
        "where the step's peak lies, so the peak falls by less than its size.",
        "benchmark": "training_throughput.py",
        "args": EPOCHS_PER_GRAPH,
    },
    {
        "key": "bce-per-bucket",
        "before": "c31b9f6",
        "after": "dd73a41",
        "what": "The BCE link loss (the authors' form) sums its all-pairs term per size bucket: "
        "each bucket's graphs padded only to its largest graph and narrowed to its clusters, "
        "from the blocks of S the pooling products already gathered; the dense [B, N_max, C] "
        "assignment is no longer built for it.",
        "why": "Unlike the Frobenius form, the BCE has no closed form over pairs: it evaluates "
        "log(1 - P_ij) for every pair. On the padded batch that is B x N_max x N_max pairs, "
        "each a C-long dot product: for a D&D batch of 20 graphs holding a 1,704-node one "
        "(426 slots at ratio 0.25), 20 x 1704^2 x 426 = 24.7 G multiply-adds, where its size "
        "buckets (heads 1704, 468, 302, 183, 117, each with its own budget) need 1.4 G. The "
        "D&D selection sweep had stopped its BCE setting at 4.1 minutes an epoch.",
        "benchmark": "training_throughput.py",
        "args": [*EPOCHS_PER_GRAPH, "--link-loss", "bce"],
    },
]

#: The timing field of each benchmark's JSON rows.
SECONDS = {"pooling_level.py": "seconds", "training_throughput.py": "seconds_per_epoch"}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(rev: str) -> str:
    return git("rev-parse", "--verify", f"{rev}^{{commit}}")


def worktree(sha: str, cache: Path) -> Path:
    """A detached worktree of commit ``sha`` under ``cache`` (made once, reused afterwards)."""
    path = cache / sha[:12]
    if not (path / "src" / "diffpool").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--force", "--detach", str(path), sha)
    return path


def run_side(entry: dict, src: Path, out: Path, extra: list[str]) -> dict:
    """One run of the entry's benchmark with ``src`` first on the import path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable,
        str(HERE / entry["benchmark"]),
        *entry["args"],
        *extra,
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return json.loads(out.with_suffix(".json").read_text())


def compare(entry: dict, before: list[dict], after: list[dict]) -> list[dict]:
    """Per (case, formulation): each side's median time and peak memory over its runs, and the
    ratios before / after. Cases a side did not finish are left out."""
    field = SECONDS[entry["benchmark"]]

    def collect(runs: list[dict]) -> dict:
        out: dict = {}
        for result in runs:
            for row in result["rows"]:
                for formulation, run in row["runs"].items():
                    if run.get("status") == "ok":
                        key = (row["case"], formulation)
                        out.setdefault(key, []).append((run[field], run["peak_bytes"]))
        return out

    b, a = collect(before), collect(after)
    rows = []
    for key in b:
        if key not in a:
            continue
        tb = statistics.median(t for t, _ in b[key])
        ta = statistics.median(t for t, _ in a[key])
        mb = statistics.median(m for _, m in b[key])
        ma = statistics.median(m for _, m in a[key])
        rows.append(
            {
                "case": key[0],
                "formulation": key[1],
                "before_seconds": tb,
                "after_seconds": ta,
                "before_runs": [t for t, _ in b[key]],
                "after_runs": [t for t, _ in a[key]],
                "speedup": tb / ta,
                "before_peak_bytes": mb,
                "after_peak_bytes": ma,
                "memory_ratio": mb / ma,
            }
        )
    return rows


def load_results(path: Path) -> list[dict]:
    """The results already written to ``path`` (none if it does not exist). Files from before
    each result carried its own command get the file's command, machine and repeats."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    meta = data.get("meta", {})
    return [{**meta, **result} for result in data["results"]]


def merge_results(old: list[dict], new: list[dict]) -> list[dict]:
    """``new`` replaces the results of the same keys in ``old``; the others are kept, so that
    ``--only KEY`` reruns one change without losing the rest. Recorded changes come first, in
    the order of :data:`OPTIMISATIONS`."""
    by_key = {r["entry"]["key"]: r for r in old}
    by_key.update({r["entry"]["key"]: r for r in new})
    order = {e["key"]: i for i, e in enumerate(OPTIMISATIONS)}
    return sorted(by_key.values(), key=lambda r: order.get(r["entry"]["key"], len(order)))


def _seconds(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:,.1f} s"


def markdown(results: list[dict]) -> str:
    lines = [
        "# What each optimisation bought",
        "",
        "Speed-up = before / after (> 1: the change made it faster); memory ratio likewise "
        "for the peak; each side's median over alternating runs. The benchmark scripts are "
        "this checkout's; only `src/` differs.",
        "",
    ]
    for result in results:
        entry = result["entry"]
        unit = "s / epoch" if entry["benchmark"] == "training_throughput.py" else "step"
        lines += [
            f"## {entry['key']} ({result['before_sha'][:7]} → {result['after_sha'][:7]})",
            "",
            entry["what"],
            "",
            f"Why: {entry['why']}",
            "",
            f"Benchmark: `python benchmarks/{entry['benchmark']} {' '.join(entry['args'])}`, "
            f"measured by `{result['command'].strip()}` on {result['machine']}, "
            f"{result['repeats']} alternating runs per side.",
            "",
            f"| case | formulation | before ({unit}) | after | speed-up | peak before | "
            "peak after | memory ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['case']} | {row['formulation']} | {_seconds(row['before_seconds'])} | "
                f"{_seconds(row['after_seconds'])} | {row['speedup']:.2f}x | "
                f"{fmt_bytes(row['before_peak_bytes'])} | {fmt_bytes(row['after_peak_bytes'])} | "
                f"{row['memory_ratio']:.2f}x |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="keys of OPTIMISATIONS to measure (default: all)")
    p.add_argument("--repeats", type=int, default=2, help="runs per side, alternating")
    p.add_argument("--device", default="cpu", help="passed on to the benchmarks")
    p.add_argument("--cache", default=str(HERE / ".cache" / "optimisations"))
    p.add_argument("--out", default=str(HERE / "results" / "optimisations"))
    args, extra = p.parse_known_args()  # anything else goes to the benchmark scripts
    known = {e["key"]: e for e in OPTIMISATIONS}
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        p.error(f"unknown optimisation(s) {unknown}; recorded: {sorted(known)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    entries = [known[k] for k in args.only] if args.only else OPTIMISATIONS
    cache, out = Path(args.cache), Path(args.out)
    measured_with = {
        "command": "python benchmarks/optimisations.py " + " ".join(sys.argv[1:]),
        "machine": machine_description(args.device),
        "repeats": args.repeats,
    }
    results = []
    for entry in entries:
        shas = {side: commit(entry[side]) for side in ("before", "after")}
        sides = {side: worktree(sha, cache) for side, sha in shas.items()}
        runs: dict = {"before": [], "after": []}
        for i in range(args.repeats):
            for side in ("before", "after"):
                print(f"== {entry['key']}: {side} ({entry[side]}), run {i + 1}/{args.repeats}")
                stem = cache / "runs" / f"{entry['key']}-{side}-{i}"
                stem.parent.mkdir(parents=True, exist_ok=True)
                runs[side].append(
                    run_side(entry, sides[side] / "src", stem, [*extra, "--device", args.device])
                )
        results.append(
            {
                "entry": entry,
                "before_sha": shas["before"],
                "after_sha": shas["after"],
                "rows": compare(entry, runs["before"], runs["after"]),
                **measured_with,
            }
        )
    results = merge_results(load_results(out.with_suffix(".json")), results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"results": results}, indent=1))
    out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {out}.json/.md")


if __name__ == "__main__":
    main()
