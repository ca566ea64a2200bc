"""Whether committed accuracy results rerun: a rerun's sweep against the committed one.

Each ``--pair COMMITTED:RERUN`` names two sweeps of ``run.py`` with the same setting, the rerun
archived under ``benchmarks/results/accuracy_runs/`` like any sweep (run with ``--out`` outside
the table, so that it replaces nothing). Where the committed sweep is archived too, every job is
compared with its namesake: whether its test-fold and validation curves repeat to the last
digit, and where not, the first epoch at which they differ. Columns whose jobs were never
archived are named by their label in ``accuracy.json`` (e.g. ``ENZYMES``) and compared cell by
cell only. Both sides' cells are computed as ``run.py`` computes the table's, beside the code
and libraries the jobs recorded (:mod:`diffpool.utils.provenance`). A rerun that differs is
reported, never substituted.

    python benchmarks/accuracy/rerun_check.py --pair proteins-both:proteins-both_rerun \
        --pair ENZYMES:enzymes_rerun --out benchmarks/results/accuracy_reruns.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from run import ARCHIVE, RESULTS, collect
from select_setting import changes

from diffpool.training.report import NOT_RECORDED, code_summary, flatten
from diffpool.training.report import collect as collect_groups
from diffpool.utils.provenance import LIBRARIES

TABLE = RESULTS / "accuracy.json"


def first_difference(committed: dict, rerun: dict) -> int | None:
    """The first epoch (counted from 1) at which the two jobs' test-fold or validation
    accuracy differ, None where both curves repeat to the last digit (NaN equal to NaN, as a
    run without a validation split writes it)."""
    firsts = []
    for key in ("heldout", "val"):
        a, b = _curve(committed, key), _curve(rerun, key)
        n = min(len(a), len(b))
        differ = np.flatnonzero(~((a[:n] == b[:n]) | (np.isnan(a[:n]) & np.isnan(b[:n]))))
        if differ.size:
            firsts.append(int(differ[0]) + 1)
        elif len(a) != len(b):
            firsts.append(n + 1)
    return min(firsts, default=None)


def _curve(job: dict, key: str) -> np.ndarray:
    values = job["paper"]["heldout_curve"] if key == "heldout" else job.get("val_curve") or []
    return np.asarray(values, dtype=float)


def libraries(jobs: dict[str, dict]) -> str:
    """The library versions the jobs recorded (:data:`NOT_RECORDED` for jobs that recorded
    none), with how many jobs recorded each set where they differ."""
    counts = Counter()
    for run in jobs.values():
        info = run.get("provenance")
        if info is None:
            counts[NOT_RECORDED] += 1
        else:
            # libraries added to the record later are left out of older records
            counts[", ".join(f"{name} {info[name]}" for name in LIBRARIES if name in info)] += 1
    return code_summary(dict(sorted(counts.items())))


def _jobs(archive_dir: Path) -> dict[str, dict]:
    """An archived sweep's finished jobs by job directory name."""
    groups, _ = collect_groups(archive_dir)
    jobs = {}
    for group in groups:
        for run in group.runs:
            jobs[Path(run["path"]).name] = run
    return jobs


def compare_jobs(committed: dict[str, dict], rerun: dict[str, dict]) -> dict[str, dict]:
    """Per model: the folds whose curves repeat, and each other fold's first differing epoch.
    The two sweeps (:func:`_jobs`) must hold the same jobs with the same setting."""
    if set(committed) != set(rerun):
        raise ValueError(f"the sweeps hold other jobs: {sorted(set(committed) ^ set(rerun))}")
    per_model: dict[str, dict] = {}
    for name in sorted(committed):
        a, b = committed[name], rerun[name]
        config = flatten(a["config"])
        differ = changes(flatten(b["config"]), config)
        if differ != "(reference)":
            raise ValueError(f"{name}: the rerun has another setting: {differ}")
        if a["epochs"] != b["epochs"]:
            raise ValueError(f"{name}: the rerun ran {b['epochs']} epochs, not {a['epochs']}")
        model = per_model.setdefault(config["model.variant"], {"same": [], "differ": {}})
        first = first_difference(a, b)
        if first is None:
            model["same"].append(a["fold"])
        else:
            model["differ"][a["fold"]] = first
    return per_model


def committed_cells(archive: Path, table: Path, committed: str) -> dict:
    """The committed side's cells: from its archive, else from the column of the table."""
    if (archive / committed).is_dir():
        return collect(archive / committed)
    columns = json.loads(table.read_text())["datasets"] if table.exists() else {}
    if committed not in columns:
        raise ValueError(
            f"{committed!r} is neither an archived sweep under {archive} nor a column of {table}"
        )
    return columns[committed]["cells"]


def check(archive: Path, table: Path, committed: str, rerun: str) -> dict:
    """The comparison of one pair: cells of both sides, and jobs where both are archived."""
    rerun_dir = archive / rerun
    if not rerun_dir.is_dir():
        raise ValueError(f"the rerun {rerun!r} is not archived under {archive}")
    old, new = committed_cells(archive, table, committed), collect(rerun_dir)
    rerun_jobs = _jobs(rerun_dir)
    committed_jobs = _jobs(archive / committed) if (archive / committed).is_dir() else None
    jobs = None if committed_jobs is None else compare_jobs(committed_jobs, rerun_jobs)
    models = [m for m in new if m != "failed"]
    missing = [m for m in models if m not in old]
    if missing:
        raise ValueError(f"{committed} has no cell for {missing}")
    rows = []
    for model in models:
        a, b = old[model], new[model]
        if a["epochs"] != b["epochs"] or a["folds"] != b["folds"]:
            raise ValueError(
                f"{model}: the rerun has {b['folds']} folds of {b['epochs']} epochs, "
                f"{committed} {a['folds']} of {a['epochs']}"
            )
        rows.append(
            dict(
                model=model,
                folds=b["folds"],
                epochs=b["epochs"],
                committed=a,
                rerun=b,
                jobs=None if jobs is None else jobs[model],
            )
        )
    return dict(
        committed=committed,
        rerun=rerun,
        rows=rows,
        code=dict(committed=code_summary(_code(old)), rerun=code_summary(_code(new))),
        libraries=dict(
            committed=NOT_RECORDED if committed_jobs is None else libraries(committed_jobs),
            rerun=libraries(rerun_jobs),
        ),
    )


def _code(cells: dict) -> dict[str, int]:
    counts = Counter()
    for model, cell in cells.items():
        if model != "failed":
            counts.update(cell.get("code") or {NOT_RECORDED: cell["folds"]})
    return dict(sorted(counts.items()))


def _protocol(cell: dict, key: str) -> str:
    value = cell.get(key)
    if value is None:
        return "—"
    text = f"{value[0]:.2f} ± {value[1]:.2f}"
    return f"{text} ({cell['paper_epoch'] + 1})" if key == "paper" else text


def _delta(a: dict, b: dict, key: str) -> str:
    if a.get(key) is None or b.get(key) is None:
        return "—"
    delta = round(b[key][0] - a[key][0], 2)
    return f"{delta:+.2f}" if delta else "0.00"


def _jobs_cell(jobs: dict | None) -> str:
    if jobs is None:
        return "not archived"
    text = f"{len(jobs['same'])} of {len(jobs['same']) + len(jobs['differ'])}"
    if jobs["differ"]:
        low, high = min(jobs["differ"].values()), max(jobs["differ"].values())
        text += f"; the others differ from epoch {low}" + (f"-{high}" if high > low else "")
    return text


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "# Do the committed accuracy results rerun?",
        "",
        "Each section compares a committed sweep with a rerun of its command, both computed as "
        "the table computes its cells: paper protocol (mean ± std over folds at the best epoch "
        "of the mean test-fold curve, that epoch in brackets) and fair protocol (each fold's "
        "test accuracy at its best validation epoch). *Jobs repeating* counts the folds whose "
        "test-fold and validation curves repeat to the last digit, and gives the range of the "
        "first differing epochs of the others. The rerun replaces nothing in the table.",
    ]
    for result in results:
        lines += [
            "",
            f"## `{result['committed']}` against `{result['rerun']}`",
            "",
            f"- code: committed {result['code']['committed']}; rerun {result['code']['rerun']}",
            f"- libraries: committed {result['libraries']['committed']}; "
            f"rerun {result['libraries']['rerun']}",
            "",
            "| model | folds × epochs | jobs repeating | paper: committed | paper: rerun | Δ "
            "| fair: committed | fair: rerun | Δ |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            a, b = row["committed"], row["rerun"]
            lines.append(
                f"| {row['model']} | {row['folds']} × {row['epochs']} | {_jobs_cell(row['jobs'])} "
                f"| {_protocol(a, 'paper')} | {_protocol(b, 'paper')} | {_delta(a, b, 'paper')} "
                f"| {_protocol(a, 'fair')} | {_protocol(b, 'fair')} | {_delta(a, b, 'fair')} |"
            )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--pair",
        action="append",
        required=True,
        help="COMMITTED:RERUN, an archived sweep (or a column label of accuracy.json) and the "
        "archived rerun of its command (repeatable)",
    )
    p.add_argument("--archive", default=str(ARCHIVE))
    p.add_argument("--table", default=str(TABLE), help="accuracy.json, for unarchived columns")
    p.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = p.parse_args(argv)
    results = []
    for pair in args.pair:
        committed, sep, rerun = pair.rpartition(":")
        if not sep or not committed or not rerun:
            p.error(f"--pair takes COMMITTED:RERUN, got {pair!r}")
        results.append(check(Path(args.archive), Path(args.table), committed, rerun))
    command = "python benchmarks/accuracy/rerun_check.py " + " ".join(argv or sys.argv[1:])
    text = markdown(results, command)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return results


if __name__ == "__main__":
    main()
