"""Measurement helpers shared by the benchmarks: peak memory of a step, subprocess workers.

Every measurement runs in a fresh subprocess (:func:`run_worker`). On CPU the peak memory is
the rise of the peak resident set size (``VmHWM``) over the resident set after setup:
``/proc/self/clear_refs`` resets the peak, and a fixed glibc mmap threshold (set by
:func:`run_worker`) returns freed tensors to the OS so that the resident set follows the live
tensors. On GPU it is the rise of ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import subprocess
import sys


def rss_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``"VmRSS:"``, ``"VmHWM:"``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak(device) -> int:
    """Reset the peak-memory counter; returns the baseline in bytes."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    return rss_kib("VmRSS:") * 1024


def peak_since(device, baseline: int) -> int:
    """Peak memory in bytes above ``baseline`` since :func:`reset_peak`."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    return rss_kib("VmHWM:") * 1024 - baseline


def steady_malloc() -> None:
    """Back to glibc's usual thresholds for timing (mmap-ing every tensor would slow every
    formulation alike, but is not how anyone runs)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD


def without_assignment(call, keyword: str) -> dict:
    """``{keyword: False}`` when ``call`` takes ``keyword``, else ``{}``: the package's layers
    (``return_assignment``) and models (``return_assignments``) then skip building the dense
    ``[B, N_max, C]`` assignment that a training step never reads, as the training module
    does. Older checkouts, which :mod:`optimisations` runs these scripts against, lack it."""
    import inspect

    return {keyword: False} if keyword in inspect.signature(call).parameters else {}


def run_worker(cmd: list[str], timeout: float, threads: int = 0) -> dict:
    """Run a worker command that prints one JSON line last; classify failures."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(status="timeout", timeout_seconds=timeout)
    if proc.returncode != 0:
        killed = proc.returncode in (-9, 137)
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return dict(
            status="out of memory" if killed or "memory" in tail[0].lower() else "error",
            detail=tail[0][:300],
        )
    return dict(status="ok", **json.loads(proc.stdout.strip().splitlines()[-1]))


def tgp_installed() -> bool:
    """Whether torch-geometric-pool (``tgp``), the peer library, is installed."""
    from importlib.util import find_spec

    return find_spec("tgp") is not None


def available_formulations(formulations) -> list[str]:
    """``formulations`` without tgp's where it is not installed (said on stderr)."""
    missing = [f for f in formulations if f.startswith("tgp") and not tgp_installed()]
    if missing:
        hint = "pip install --no-build-isolation torch-geometric-pool"
        print(f"skip {', '.join(missing)}: not installed ({hint})", file=sys.stderr)
    return [f for f in formulations if f not in missing]


def python() -> str:
    return sys.executable


def machine_description(device: str) -> str:
    """The processor and core count, and the GPU's name when ``device`` is a CUDA device."""
    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if str(device).startswith("cuda"):
        import torch

        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def tu_available(name: str, tu_dir) -> bool:
    """Whether a TU dataset can be loaded: it ships with the package, or ``tu_dir`` holds its
    official zip."""
    from pathlib import Path

    from diffpool.datasets import BUNDLED

    return name in BUNDLED or (Path(tu_dir) / f"{name}.zip").exists()


def tu_dataset(name: str, tu_dir, cache):
    """A TU dataset (node labels as features; the one-hot degree where it has none, as the
    training presets) from the package or ``tu_dir``'s zip, extracted into ``cache/tu``; and
    its largest graph's node count."""
    import shutil
    from pathlib import Path

    from diffpool.datasets import load_tu

    root = Path(cache) / "tu"
    root.mkdir(parents=True, exist_ok=True)
    archive = Path(tu_dir) / f"{name}.zip"
    if archive.exists() and not (root / f"{name}.zip").exists():
        shutil.copy(archive, root / f"{name}.zip")
    dataset = load_tu(name, root, node_features="labels")
    slices = dataset.slices.get("x")
    if slices is None:  # no node features stored (COLLAB): they come from the transform
        return dataset, max(int(data.num_nodes) for data in dataset)
    return dataset, int(slices.diff().max())


def fmt_bytes(b: float) -> str:
    if b >= 2**30:
        return f"{b / 2**30:,.1f} GiB"
    return f"{b / 2**20:,.0f} MiB" if b >= 2**20 else f"{b / 2**10:,.0f} KiB"


def code_description(meta: dict) -> str:
    """The code a benchmark ran on (its commit, or the package version), from its metadata."""
    from diffpool.utils.provenance import code_label

    return code_label(meta.get("provenance")) or "unknown"


def scaling_plot(rows, formulations, seconds, time_label, xlabel, title, path) -> None:
    """Time (``seconds(measurement)``) and peak memory against the synthetic rows' ``n_max``,
    log-log, one line per formulation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for f in formulations:
        pts = [(r["n_max"], r["runs"].get(f, {})) for r in rows]
        pts = [(n, m) for n, m in pts if m.get("status") == "ok"]
        if not pts:
            continue
        n = [p[0] for p in pts]
        axes[0].plot(n, [seconds(p[1]) for p in pts], marker="o", label=f)
        axes[1].plot(n, [p[1]["peak_bytes"] / 2**20 for p in pts], marker="o", label=f)
    from matplotlib.ticker import NullFormatter

    sizes = sorted({r["n_max"] for r in rows})
    for ax, label in zip(axes, (time_label, "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        # the measured sizes as plain numbers (log axes label 3x10^1, 4x10^1, ... on top of
        # each other between decades)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_common_arguments(parser, *, stem: str, formulations, real, timeout: float, here) -> None:
    """The options every benchmark driver has: the hidden worker mode, the device, limits,
    where the TU zips and the cache are, what to run and where to write."""
    import argparse
    from pathlib import Path

    here = Path(here)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--formulation", choices=formulations)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=timeout, help="per measurement, s")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch's threads per measurement (default 1: see docs/scaling.md; 0: torch's "
        "default, one per core)",
    )
    parser.add_argument("--tu-dir", default=str(here.parent.parent / "shared" / "data" / "TU"))
    parser.add_argument("--cache", default=str(here / ".cache"))
    parser.add_argument("--real", nargs="*", default=list(real))
    parser.add_argument("--formulations", nargs="*", default=list(formulations))
    parser.add_argument(
        "--out",
        default=str(here / "out" / stem),
        help="output stem: writes STEM.json, STEM.md, STEM.png (default: benchmarks/out/, "
        f"untracked; the committed tables: --out benchmarks/results/{stem})",
    )
