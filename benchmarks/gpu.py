"""Both speed benchmarks on a CUDA GPU in one command, sized to finish in under 8 minutes on an
H100: ``pooling_level.py`` and ``training_throughput.py`` on the device, eager and, for our
formulations, compiled with ``torch.compile(mode="reduce-overhead")``, each run's host
synchronisations of one step counted (``torch.cuda.set_sync_debug_mode("warn")``).

    python benchmarks/gpu.py --out "$OUT"          # on a CUDA machine, about 7.5 minutes
    python benchmarks/gpu.py --dry-run --out /tmp/g   # the same pipeline on the CPU, < 1 min

It writes ``pooling_level_<gpu>.{md,json,png}`` and ``training_throughput_<gpu>.{md,json,png}``
into ``--out`` (``<gpu>``: h100, h200, ... from the device's name; ``cpu`` for a dry run), each
table stamped with the code that ran: its git commit, or where the copy has no ``.git`` the
package version and the SHA-256 of the package's files (``--source-hash`` prints it for a
checkout, to match). Nothing beyond torch and torch_geometric is needed: where ``diffpool`` is
not installed, the clone's ``src/`` is put on the path.

The whole run has a time budget (``--budget``, 450 s): the pooling level gets the first
``--pooling-share`` of it, the training step the rest; a measurement that would start after
its benchmark's share is skipped, and the table says so. Eager measurements come first, the
compiled ones after them, so that a slow compilation can only cost compiled rows.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: what each benchmark runs on a GPU, and in a quick run (a dry run on the CPU: one small case,
#: our fixed budgets against PyG's dense formulation, a few steps)
PLANS = {
    "pooling_level": {
        "full": ["--real", "MUTAG", "ENZYMES", "--synthetic", "50", "200", "800",
                 "--rounds", "1", "--reps", "5", "--min-time", "0.5", "--warmup-steps", "3",
                 "--compile-on", "MUTAG", "50"],
        "quick": ["--real", "MUTAG", "--synthetic", "--formulations", "ours_fixed",
                  "dense_batch_pad", "--rounds", "1", "--reps", "2", "--min-time", "0.05",
                  "--warmup-steps", "1", "--compile-on", "MUTAG"],
    },
    "training_throughput": {
        "full": ["--real", "MUTAG", "ENZYMES", "PROTEINS", "--scaling", "50", "200", "800",
                 "--formulations", "ours_fixed", "ours_per_graph", "dense_pyg", "tgp_batched",
                 "tgp_unbatched", "--repeats", "1", "--max-batches", "10", "--warmup",
                 "--no-phases", "--compile-on", "MUTAG", "50"],
        "quick": ["--real", "MUTAG", "--scaling", "--formulations", "ours_fixed", "dense_pyg",
                  "--repeats", "1", "--max-batches", "1", "--warmup", "--no-phases",
                  "--compile-on", "MUTAG"],
    },
}  # fmt: skip


def device_slug(device: str) -> str:
    """A short name of the device for the tables' file names: ``h100`` for "NVIDIA H100 80GB
    HBM3", ``cpu`` for the CPU, else ``gpu``."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    match = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", torch.cuda.get_device_name(device))
    return match.group(1).lower() if match else "gpu"


def check_device(device: str) -> str | None:
    """Why ``device`` cannot run the benchmarks (:obj:`None` when it can)."""
    import torch

    if device == "cpu":
        return None
    if not device.startswith("cuda"):
        return f"--device takes cpu or cuda[:N], got {device!r}"
    if not torch.cuda.is_available():
        return (
            f"no CUDA device: torch {torch.__version__} sees none (CUDA build: "
            f"{torch.version.cuda or 'no'}). Run this on a CUDA machine with a CUDA build of "
            "torch, or check the pipeline on the CPU with --dry-run"
        )
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return f"{device}: torch sees {torch.cuda.device_count()} CUDA device(s)"
    return None


def environment() -> dict:
    """The environment of the benchmark processes: the clone's ``src/`` on the path where
    ``diffpool`` is not installed."""
    env = dict(os.environ)
    if find_spec("diffpool") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        sys.path.insert(0, str(SRC))
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(HERE / "results"), help="folder of the tables")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="one small case per benchmark")
    p.add_argument("--dry-run", action="store_true", help="--device cpu --quick")
    p.add_argument(
        "--compile",
        default=None,
        help="torch.compile's mode for ours (default: reduce-overhead on a GPU; dynamo-only, "
        "tracing without code generation, on the CPU)",
    )
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    p.add_argument(
        "--pooling-share", type=float, default=0.4, help="the pooling level's part of --budget"
    )
    p.add_argument("--tu-dir", help="official TU zips (default: the datasets the package ships)")
    p.add_argument("--source-hash", action="store_true", help="print the code's hash and exit")
    args = p.parse_args(argv)
    env = environment()
    if args.source_hash:
        sys.path.insert(0, str(HERE))
        from measure import source_hash

        print(source_hash())
        return 0
    if args.dry_run:
        args.device, args.quick = "cpu", True
    problem = check_device(args.device)
    if problem:
        print(f"benchmarks/gpu.py: {problem}", file=sys.stderr)
        return 2
    mode = args.compile or ("reduce-overhead" if args.device.startswith("cuda") else "dynamo-only")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_slug(args.device)
    start = time.monotonic()
    ends = {"pooling_level": args.pooling_share * args.budget, "training_throughput": args.budget}
    failed = []
    for name, plan in PLANS.items():
        left = ends[name] - (time.monotonic() - start)
        cmd = [sys.executable, str(HERE / f"{name}.py"), *plan["quick" if args.quick else "full"],
               "--device", args.device, "--compile", mode, "--deadline", f"{max(left, 1):.0f}",
               "--out", str(out / f"{name}_{slug}")]  # fmt: skip
        if args.tu_dir:
            cmd += ["--tu-dir", args.tu_dir]
        print("$ " + " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(name)
    elapsed = time.monotonic() - start
    print(f"benchmarks/gpu.py: {elapsed:.0f} s on {slug}; tables in {out}", flush=True)
    if failed:
        print(f"benchmarks/gpu.py: {', '.join(failed)} failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
