"""The first hour, scripted: a fresh clone, the README's commands in order, each block from an
empty directory, with a background load beside them; every command timed against the time the
README states for it, and its output counted in lines.

* the two set-up commands (``<!-- ci:main -->``, ``<!-- ci:test -->``) in the clone, their
  times stated in the sentence before each;
* every line of the README's ``## Training`` block (continuation lines joined), in one fresh
  directory, with the clone's virtual environment; its time is the ``about N s|min|h`` of the
  line's comment.

A command passes when it exits 0 within 1.5x its stated time (the README's figures are
rounded; a shared machine varies) and prints at most ``--max-lines`` lines.

    python benchmarks/newcomer.py                          # about 15 minutes on 2 cores
    python benchmarks/newcomer.py --loads --out benchmarks/results/newcomer   # no extra load
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from threads import LOADS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UNITS = {"s": 1, "second": 1, "seconds": 1, "min": 60, "minute": 60, "minutes": 60, "h": 3600,
         "hour": 3600, "hours": 3600}  # fmt: skip
ABOUT = re.compile(r"about ([\d.]+)\s+(" + "|".join(sorted(UNITS, key=len, reverse=True)) + r")\b")
#: how far over its stated time a command may run (the stated times are rounded)
SLACK = 1.5


def stated_seconds(text: str) -> float | None:
    match = ABOUT.search(text)
    return None if match is None else float(match.group(1)) * UNITS[match.group(2)]


def setup_steps(readme: str) -> list[dict]:
    """The ci:main and ci:test commands with the time stated in the paragraph before each."""
    steps = []
    for marker in ("main", "test"):
        head, _, rest = readme.partition(f"<!-- ci:{marker} -->")
        paragraph = head.rstrip().rsplit("\n\n", 1)[-1]
        command = re.search(r"```bash\n(.*?)\n```", rest, flags=re.S).group(1).strip()
        steps.append({"block": "setup", "command": command, "stated_s": stated_seconds(paragraph)})
    return steps


def training_steps(readme: str) -> list[dict]:
    """Every command line of the ``## Training`` section's first bash block."""
    section = readme.split("## Training", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    steps = []
    for line in block.replace("\\\n", " ").splitlines():
        command, _, comment = line.partition("#")
        if command.strip():
            steps.append(
                {
                    "block": "training",
                    "command": command.strip(),
                    "stated_s": stated_seconds(comment),
                }  # fmt: skip
            )
    return steps


def run_step(step: dict, cwd: Path, env: dict, max_lines: int) -> dict:
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", step["command"]], cwd=cwd, env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    lines = len((proc.stdout + proc.stderr).splitlines())
    stated = step["stated_s"]
    ok = (
        proc.returncode == 0
        and lines <= max_lines
        and (stated is None or seconds <= SLACK * stated)
    )
    tail = (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""
    return {**step, "seconds": round(seconds, 1), "lines": lines, "rc": proc.returncode,
            "ok": ok, "tail": tail}  # fmt: skip


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "not stated"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", default=str(ROOT), help="the repository to clone")
    p.add_argument("--loads", nargs="*", default=["python:1"], help="KIND:N (threads.py)")
    p.add_argument("--max-lines", type=int, default=100, help="a screen or two")
    p.add_argument("--out", default=str(HERE / "out" / "newcomer"), help="output stem")
    args = p.parse_args(argv)
    workers = []
    for load in args.loads:
        kind, _, count = load.partition(":")
        workers += [
            multiprocessing.Process(target=LOADS[kind], daemon=True) for _ in range(int(count))
        ]
    for w in workers:
        w.start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "diffpool"
            subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
            readme = (clone / "README.md").read_text()
            env = {
                k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "OMP_NUM_THREADS")
            }
            env["PATH"] = os.pathsep.join(
                p for p in env["PATH"].split(os.pathsep) if ".venv" not in p
            )
            for step in setup_steps(readme):
                results.append(run_step(step, clone, env, args.max_lines))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "tail"}), flush=True)
            venv = {**env, "VIRTUAL_ENV": str(clone / ".venv"),
                    "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"}  # fmt: skip
            empty = Path(tmp) / "empty"
            empty.mkdir()
            for step in training_steps(readme):
                results.append(run_step(step, empty, venv, args.max_lines))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "tail"}), flush=True)
    finally:
        for w in workers:
            w.terminate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    load = (
        f"beside {' '.join(args.loads)} (threads.py's loads)"
        if args.loads
        else "with no load of its own (the machine's other jobs ran as they were)"
    )
    lines = [
        "# The README's commands, as a newcomer runs them",
        "",
        f"`python benchmarks/newcomer.py {' '.join(['--loads', *args.loads])}` on {os.cpu_count()} "
        f"cores, {time.strftime('%Y-%m-%d')}: a fresh clone, each block from an empty "
        f"directory, {load}; ok: exit 0, at most {SLACK}x the stated time and "
        f"{args.max_lines} lines of output.",
        "",
        "| command | stated | measured | lines | ok |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        command = r["command"] if len(r["command"]) < 90 else r["command"][:87] + "..."
        verdict = "yes" if r["ok"] else f"NO (exit {r['rc']})" if r["rc"] else "NO"
        lines.append(
            f"| `{command}` | {fmt_time(r['stated_s'])} | {fmt_time(r['seconds'])} | "
            f"{r['lines']} | {verdict} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
