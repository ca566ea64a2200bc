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
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass


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


def as_trained(call, *keywords: str) -> dict:
    """``{keyword: False}`` for each of ``keywords`` that ``call`` takes: the package's layers
    (``return_assignment``) and models (``return_assignments``, ``return_levels``) then skip
    the dense ``[B, N_max, C]`` assignment and the per-level outputs that a training step never
    reads, as the training module does (a model without per-level outputs may keep fixed
    budgets' coarse adjacency factored). Older checkouts, which :mod:`optimisations` runs these
    scripts against, lack some of them."""
    import inspect

    taken = inspect.signature(call).parameters
    return {keyword: False for keyword in keywords if keyword in taken}


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

    info = meta.get("provenance") or {}
    label = code_label(info) or "unknown"
    digest = meta.get("source_sha256")
    if digest and (not info.get("commit") or info.get("modified")):
        label += f" (source sha256 {digest[:12]})"  # no commit names the code that ran
    return label


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
        "--deadline",
        type=float,
        default=0.0,
        help="wall seconds for the whole run: measurements that would start later are skipped "
        "and the table says so (default 0: no limit)",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        help="also time our formulations compiled, torch.compile(mode=COMPILE) (dynamo-only: "
        "backend='eager', a quick check of the compiled path on a CPU), after the eager runs",
    )
    parser.add_argument(
        "--compile-on",
        nargs="*",
        metavar="CASE",
        help="the cases with compiled variants: TU names and synthetic sizes (default: all)",
    )
    parser.add_argument(
        "--out",
        default=str(here / "out" / stem),
        help="output stem: writes STEM.json, STEM.md, STEM.png (default: benchmarks/out/, "
        f"untracked; the committed tables: --out benchmarks/results/{stem})",
    )


# --------------------------------------------------------------------------- architectures
#: What a formulation's assignment S is computed from. A table compares a formulation's speed
#: only with the peers of its own architecture; the figure against the other architecture's
#: fastest peer is a separate, labelled column.
ARCHITECTURES = {
    "gnn_pool": "S = softmax(GNN_pool(A, X)): a pooling GNN beside the embedding GNN (the "
    "paper's DiffPool; ours, PyG's dense formulation)",
    "mlp": "S = softmax(MLP(Z)), Z the embeddings that are pooled, no pooling GNN (as "
    "torch-geometric-pool's DiffPool)",
    "none": "no pooling (the flat model: the encoders alone)",
}


@dataclass(frozen=True)
class Formulation:
    """One column of a speed table: its architecture (a key of :data:`ARCHITECTURES`), its
    role (``"ours"``: timed against the peers; ``"peer"``; ``"base"``: a reference that is
    no peer), and for ours the budget and the keyword arguments that build our layer or model
    (a new option of ours, such as another assignment, is one more entry with its
    ``options``)."""

    architecture: str
    role: str
    budget: str | None = None
    options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}")
        if self.role not in ("ours", "peer", "base"):
            raise ValueError(f"unknown role {self.role!r}")


#: the suffix of a compiled variant of one of our formulations (``ours_fixed+compiled``)
COMPILED = "+compiled"
#: ``--compile``'s choices: torch.compile's modes, and dynamo-only (``backend="eager"``: the
#: compiled path traced without code generation, a quick check on a CPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "dynamo-only")


def compile_module(module, mode: str):
    """``module`` compiled as ``--compile mode`` says."""
    import torch

    if mode == "dynamo-only":
        return torch.compile(module, backend="eager")
    return torch.compile(module, mode=mode)


def compiled_step_begin(mode: str | None) -> None:
    """Before each training step of a compiled module: CUDA graphs (reduce-overhead,
    max-autotune) are told that a new iteration starts, so that the last step's outputs may be
    overwritten."""
    if mode in ("reduce-overhead", "max-autotune"):
        import torch

        torch.compiler.cudagraph_mark_step_begin()


def compile_cases(cases: list[dict], names) -> list[dict]:
    """The cases named in ``--compile-on`` (TU names, synthetic sizes; all when not given)."""
    if names is None:
        return list(cases)
    wanted = {str(n) for n in names}
    return [c for c in cases if c["name"] in wanted or str(c.get("n_max")) in wanted]


def base_name(name: str) -> str:
    """A run's formulation without the compiled variant's suffix."""
    return name.split("+", 1)[0]


def run_architecture(name: str, run: dict, formulations: dict) -> str | None:
    """The architecture a run recorded, else its formulation's (tables written before runs
    named it)."""
    spec = formulations.get(base_name(name))
    return run.get("architecture") or (spec.architecture if spec else None)


def best_peers(runs: dict, name: str, key: str, formulations: dict):
    """For run ``name`` of a row's ``runs``: the fastest (``key`` a time) or smallest (a
    peak) finished peer of the same architecture and the best of the other architectures
    (pooling ones: the flat model is no peer), each ``(peer name, value)`` or :obj:`None`."""
    own = run_architecture(name, runs[name], formulations)
    same, other = [], []
    for peer, m in runs.items():
        spec = formulations.get(base_name(peer))
        if spec is None or spec.role != "peer" or m.get("status") != "ok":
            continue
        arch = run_architecture(peer, m, formulations)
        (same if arch == own else other).append((peer, m[key]))

    def best(pairs):
        return min(pairs, key=lambda pm: pm[1]) if pairs else None

    return best(same), best(other)


def ratio_cell(best, value: float) -> str:
    """``"1.50x (peer)"``: the peer's figure over ours (> 1: ours is faster / smaller)."""
    return f"{best[1] / max(value, 1e-30):.2f}x ({best[0]})" if best else ""


def architecture_note(formulations: dict, names) -> str:
    """The architectures of ``names``, one sentence each, for a table's header."""
    used = []
    for name in names:
        spec = formulations.get(base_name(name))
        if spec and spec.architecture not in used:
            used.append(spec.architecture)
    return " ".join(
        f"`{a}`: {ARCHITECTURES[a]} ("
        + ", ".join(f"`{n}`" for n in names if formulations[base_name(n)].architecture == a)
        + ")."
        for a in used
    )


# --------------------------------------------------------------------------- host syncs
#: Tensor methods and functions that make the host wait for a GPU (a device-to-host copy or
#: a result whose size depends on the data). On a CPU nothing waits: :func:`count_host_syncs`
#: counts these calls there as a proxy for what a GPU would count.
SYNCING_CALLS = frozenset(
    {
        "torch.Tensor.item",
        "torch.Tensor.tolist",
        "torch.Tensor.__bool__",
        "torch.Tensor.__int__",
        "torch.Tensor.__float__",
        "torch.Tensor.__index__",
        "torch.Tensor.nonzero",
        "torch.nonzero",
        "torch.Tensor.argwhere",
        "torch.argwhere",
        "torch.Tensor.masked_select",
        "torch.masked_select",
        "torch.Tensor.unique",
        "torch.unique",
        "torch.unique_consecutive",
        "torch.Tensor.unique_consecutive",
        "torch.bincount",
        "torch.Tensor.bincount",
    }
)


def _syncing_call(name: str, args, kwargs) -> bool:
    if name in SYNCING_CALLS:
        return True
    if name in ("torch.repeat_interleave", "torch.Tensor.repeat_interleave"):
        # the output's size is the repeats' sum unless output_size says it
        # torch.repeat_interleave(repeats) repeats the indices: its one argument is repeats
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0] if args else None)
        return _is_tensor(repeats) and kwargs.get("output_size") is None
    if name in ("torch.where", "torch.Tensor.where"):
        return len(args) + len(kwargs) == 1  # torch.where(condition) is nonzero
    if name in ("torch.Tensor.__getitem__", "torch.Tensor.__setitem__"):
        index = args[1] if len(args) > 1 else None
        items = index if isinstance(index, tuple) else (index,)
        return any(_is_tensor(i) and i.dtype == _bool() for i in items)  # a boolean mask
    return False


def _in_optimizer() -> bool:
    """Whether the caller runs inside ``torch.optim``: its step counters live on the host even
    when the parameters are on a GPU (``capturable=False``, the default), so reading them
    waits for nothing."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("torch.optim"):
            return True
        frame = frame.f_back
    return False


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _bool():
    import torch

    return torch.bool


def count_host_syncs(fn, device) -> dict:
    """Run ``fn()`` once and count how often it made (CUDA) or would make (CPU) the host wait
    for the device: on a CUDA device the warnings of ``torch.cuda.set_sync_debug_mode("warn")``
    (every synchronising operation, copies to the host included); on a CPU the calls in
    :data:`SYNCING_CALLS` (and boolean-mask indexing, ``repeat_interleave`` without
    ``output_size``, one-argument ``where``), seen by a ``TorchFunctionMode`` from Python
    only, outside ``torch.optim`` (whose step counters stay on the host). Returns
    ``{"count": n, "method": "cuda_sync_debug" | "cpu_proxy", "calls": {...}}`` (the CPU
    proxy's count per call)."""
    import collections
    import warnings

    import torch
    from torch.overrides import TorchFunctionMode, resolve_name

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
        return dict(count=len(syncs), method="cuda_sync_debug", calls={})

    calls: collections.Counter = collections.Counter()

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = resolve_name(func) or getattr(func, "__name__", repr(func))
            if _syncing_call(name, args, kwargs) and not _in_optimizer():
                calls[name.removeprefix("torch.")] += 1
            return func(*args, **kwargs)

    with Count():
        fn()
    return dict(count=sum(calls.values()), method="cpu_proxy", calls=dict(calls))


def sync_note(meta: dict) -> str:
    """What a table's host-sync column counts."""
    if str(meta.get("device", "cpu")).startswith("cuda"):
        return (
            "`host syncs`: the synchronising CUDA operations of one step, counted with "
            '`torch.cuda.set_sync_debug_mode("warn")` (copies to the host included).'
        )
    return (
        "`host syncs`: on this CPU a proxy, the calls in one step that synchronise on a GPU "
        "(`item`, `tolist`, `bool`/`int`/`float` of a tensor, `nonzero`, `unique`, "
        "`bincount`, boolean-mask indexing, ...; `measure.SYNCING_CALLS`), seen from Python "
        "(not inside compiled code: none for compiled runs)."
    )


# --------------------------------------------------------------------------- time budget
class Deadline:
    """A run's wall-clock budget: measurements that would start after it are skipped (the
    table says so), and each one's timeout ends with it."""

    SKIPPED = "skipped (time budget)"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds if seconds > 0 else None

    def remaining(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()

    def run(self, cmd: list[str], timeout: float, threads: int) -> dict:
        """:func:`run_worker` within the budget; a skipped record when none is left."""
        left = self.remaining()
        if left <= 1:
            return dict(status=self.SKIPPED)
        result = run_worker(cmd, min(timeout, left), threads)
        if result["status"] == "timeout" and left < timeout:
            result["status"] = "timeout (time budget)"
        return result


# --------------------------------------------------------------------------- code stamp
def source_hash(package_dir=None) -> str:
    """SHA-256 over the package's files (paths and contents, ``__pycache__`` left out): what
    names the code where no git commit does (a copied working tree, a wheel)."""
    import hashlib
    from pathlib import Path

    if package_dir is None:
        import diffpool

        package_dir = Path(diffpool.__file__).parent
    root = Path(package_dir)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()
