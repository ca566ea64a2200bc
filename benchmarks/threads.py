"""Training step time against torch's intra-op thread count, on a quiet and a loaded machine:
the measurements behind the default ``threads=1`` of ``diffpool-train`` and ``--threads 1`` of
the benchmarks (``docs/scaling.md``).

For each background load (none; then each of ``--loads``: ``python:N``, N busy Python loops,
one core each; ``torch:N``, N processes multiplying matrices with torch's default threads, as
another training job would) and each dataset (ENZYMES: small graphs; D&D: large ones, when
``DD.zip`` is in ``--tu-dir``, else PROTEINS), the training step of DiffPool with per-graph
budgets is timed with 1, 2 and torch's default number of threads (one per core), alternating
(``training_throughput.py``'s worker, ``--max-batches`` batches, median step). The table gives
each median step and its ratio to one thread; the load average before each measurement (what
else ran on the machine) is recorded beside it.

    python benchmarks/threads.py                      # about 8 minutes on 2 cores
    python benchmarks/threads.py --loads python:4 --out benchmarks/results/threads
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _busy_python() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


def _busy_torch() -> None:  # pragma: no cover - runs in the load processes
    import torch

    a = torch.randn(512, 512)
    while True:
        a = torch.tanh(a @ a)


LOADS = {"python": _busy_python, "torch": _busy_torch}


def measure(dataset: str, threads: int, args) -> dict:
    """One training_throughput.py run of one dataset at ``threads`` (0: torch's default)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, str(HERE / "training_throughput.py"), "--real", dataset,
            "--scaling", "--formulations", "ours_per_graph", "--repeats", "1",
            "--max-batches", str(args.max_batches), "--threads", str(threads),
            "--tu-dir", args.tu_dir, "--timeout", str(args.timeout), "--out", f"{tmp}/t",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        run = json.loads(Path(f"{tmp}/t.json").read_text())["rows"][0]["runs"]["ours_per_graph"]
    if run.get("status") != "ok":
        return {"status": run.get("status", "failed")}
    return {"status": "ok", "step_s": run["median_step_seconds"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--loads",
        nargs="*",
        default=["python:2", "torch:1"],
        help="the loaded cases, KIND:N (kinds: python, torch)",
    )
    p.add_argument("--max-batches", type=int, default=10)
    p.add_argument("--timeout", type=float, default=600.0, help="per measurement, s")
    p.add_argument("--tu-dir", default=str(HERE.parent.parent / "shared" / "data" / "TU"))
    p.add_argument("--out", default=str(HERE / "out" / "threads"), help="output stem")
    args = p.parse_args(argv)
    os.environ.pop("OMP_NUM_THREADS", None)  # the torch load runs with torch's default threads
    large = "DD" if (Path(args.tu_dir) / "DD.zip").exists() else "PROTEINS"
    cores = os.cpu_count() or 1
    counts = {1: "1", 2: "2", 0: f"torch default ({cores})"}
    rows = []
    for load in ["none", *args.loads]:
        kind, _, count = load.partition(":")
        target = LOADS.get(kind)
        if load != "none" and (target is None or not count.isdigit()):
            p.error(f"--loads takes KIND:N with KIND in {sorted(LOADS)}, got {load!r}")
        n = 0 if load == "none" else int(count)
        workers = [multiprocessing.Process(target=target, daemon=True) for _ in range(n)]
        for w in workers:
            w.start()
        try:
            time.sleep(3 if n else 0)
            for dataset in ("ENZYMES", large):
                row = {"load": load, "dataset": dataset, "runs": {}}
                for threads in counts:
                    before = os.getloadavg()[0]
                    row["runs"][threads] = {**measure(dataset, threads, args), "loadavg": before}
                    print(load, dataset, threads, row["runs"][threads], flush=True)
                rows.append(row)
        finally:
            for w in workers:
                w.terminate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cores": cores,
        "date": time.strftime("%Y-%m-%d"),
        "max_batches": args.max_batches,
        "command": "python benchmarks/threads.py --loads " + " ".join(args.loads),
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))


def markdown(meta: dict, rows: list[dict]) -> str:
    counts = {"1": "1 thread", "2": "2 threads", "0": f"torch's default ({meta['cores']})"}
    lines = [
        "# Training step against torch's threads",
        "",
        f"`{meta['command']}` on {meta['cores']} cores, {meta['date']}: DiffPool with "
        f"per-graph budgets, median training step over {meta['max_batches']} batches, and its "
        "ratio to one thread (below 1: faster). Background load: none, N busy Python loops "
        "(`python:N`), or N processes multiplying matrices with torch's default threads "
        "(`torch:N`, as another training job). The load average before each measurement is in "
        "the JSON file.",
        "",
        "| background load | dataset | " + " | ".join(counts.values()) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    for row in rows:
        runs = {str(k): v for k, v in row["runs"].items()}
        base = runs["1"].get("step_s")
        cells = []
        for threads in counts:
            run = runs[threads]
            if run["status"] != "ok":
                cells.append(run["status"])
                continue
            ratio = f" ({run['step_s'] / base:.1f}x)" if base and threads != "1" else ""
            cells.append(f"{1000 * run['step_s']:.0f} ms{ratio}")
        lines.append(f"| {row['load']} | {row['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
