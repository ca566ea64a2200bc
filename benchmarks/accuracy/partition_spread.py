"""How much a setting's accuracy moves between CV partitions (runs with different seeds).

Each setting is given as archived sweeps of ``run.py`` (``benchmarks/results/accuracy_runs/``)
that differ in ``seed`` only, which sets the stratified partition, the validation split and the
training order. For every sweep the table gives both protocols of
:mod:`diffpool.training.report` (the fair one only where the sweep has a validation split), then
their mean and range over the partitions. Sweeps that differ in anything else than the seed or
the budget are refused; every sweep is read for the shortest budget among them, so that a longer
run gets no more epochs to peak in. The spread is a statement about the setting, not a choice:
no seed is picked.

    python benchmarks/accuracy/partition_spread.py --dataset DD \
        --setting dd-per_graph_no_entropy_paper_split,dd-per_graph_no_entropy_paper_split_seed1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from select_setting import ARCHIVE, changes, model_group

from diffpool.training.report import Group


def _without_seeds(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "seed" and not k.endswith(".seed")}


def load_sweep(archive_dir: Path, model: str) -> Group:
    """The one ``model`` configuration of an archived sweep, its runs sorted by fold."""
    group = model_group(archive_dir, model)
    if group is None:
        raise ValueError(f"{archive_dir} must hold one {model!r} configuration, found none")
    return group


def protocols(group: Group, epochs: int) -> dict:
    """Both protocols over the first ``epochs`` epochs: ``paper`` (mean ± std over folds at the
    best epoch of the mean test-fold curve, and that epoch, counted from 1) and ``fair`` (each
    fold's test-fold accuracy at its best validation epoch; None without a validation split)."""
    mean, std, best = group.paper(epochs)
    out = dict(paper=[100 * mean, 100 * std], paper_epoch=best + 1)
    # a run without a validation split logs NaN (or nothing) there
    val = [np.array(r.get("val_curve") or [], dtype=float)[:epochs] for r in group.runs]
    if all(len(v) == epochs and not np.isnan(v).any() for v in val):
        # the first epoch with the best validation accuracy, as the fair protocol takes it
        fair = [r["paper"]["heldout_curve"][int(np.argmax(v))] for r, v in zip(group.runs, val)]
        out["fair"] = [100 * np.mean(fair), 100 * np.std(fair)]
    else:
        out["fair"] = None
    return out


def spread(archive: Path, sweeps: list[str], model: str) -> dict:
    """Every sweep's protocols, and their mean and range over the partitions."""
    loaded = {name: load_sweep(archive / name, model) for name in sweeps}
    reference = loaded[sweeps[0]]
    for name, sweep in loaded.items():
        differ = changes(_without_seeds(sweep.config), _without_seeds(reference.config))
        if differ != "(reference)":
            raise ValueError(f"{name} differs from {sweeps[0]} in more than the seed: {differ}")
        if sweep.folds != reference.folds:
            raise ValueError(f"{name} holds folds {sweep.folds}, {sweeps[0]} others")
    seeds = [loaded[name].config.get("seed") for name in sweeps]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the sweeps must have different seeds, got {seeds}")
    epochs = min(len(r["paper"]["heldout_curve"]) for g in loaded.values() for r in g.runs)
    rows = [
        dict(sweep=name, seed=seed, **protocols(loaded[name], epochs))
        for name, seed in zip(sweeps, seeds)
    ]
    summary = {}
    for key in ("paper", "fair"):
        values = [row[key][0] for row in rows if row[key] is not None]
        if len(values) == len(rows):
            summary[key] = dict(mean=float(np.mean(values)), low=min(values), high=max(values))
    return dict(model=model, epochs=epochs, folds=len(reference.runs), rows=rows, **summary)


def _pct(cell) -> str:
    return "—" if cell is None else f"{cell[0]:.1f} ± {cell[1]:.1f}"


def markdown(results: list[dict], dataset: str, command: str) -> str:
    lines = [
        f"# Spread over CV partitions: {results[0]['model']} on {dataset}",
        "",
        "Each row is one run of the same setting with another `seed` (the stratified "
        "partition, the validation split and the training order), mean ± std over its folds. "
        "paper: at the best epoch of the mean test-fold curve (that epoch in brackets); fair: "
        "each fold's test accuracy at its best validation epoch (— without a validation "
        "split). No seed is selected; the mean over partitions describes the setting better "
        "than any one of them.",
    ]
    for result in results:
        lines += [
            "",
            f"Setting of `{result['rows'][0]['sweep']}`, {result['folds']} folds, the first "
            f"{result['epochs']} epochs:",
            "",
            "| sweep | seed | paper protocol (epoch) | fair protocol |",
            "|---|---|---|---|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['sweep']} | {row['seed']} | {_pct(row['paper'])} "
                f"({row['paper_epoch']}) | {_pct(row['fair'])} |"
            )
        for key in ("paper", "fair"):
            if key in result:
                s = result[key]
                lines.append(
                    f"| **mean over {len(result['rows'])} partitions**, {key} | | "
                    f"{s['mean']:.1f} (range {s['low']:.1f}-{s['high']:.1f}) | |"
                )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--setting",
        action="append",
        required=True,
        help="comma-separated archived sweeps of one setting, one per seed (repeatable)",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="diffpool", help="model.variant of the jobs")
    p.add_argument("--archive", default=str(ARCHIVE))
    p.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = p.parse_args(argv)
    results = []
    for setting in args.setting:
        sweeps = [s for s in setting.split(",") if s]
        if len(sweeps) < 2:
            p.error(f"--setting needs at least two sweeps, got {setting!r}")
        results.append(spread(Path(args.archive), sweeps, args.model))
    command = "python benchmarks/accuracy/partition_spread.py " + " ".join(argv or sys.argv[1:])
    text = markdown(results, args.dataset, command)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return results


if __name__ == "__main__":
    main()
