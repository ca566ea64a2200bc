"""Stratified 10-fold CV of the paper's table, both protocols, beside the published figures.

For every dataset, one Hydra sweep over the ``paper_<dataset>_<model>`` presets and the folds
(``diffpool-train -m experiment=... data.fold=range(10)``), into a named sweep directory so
that an interrupted run continues where it stopped (finished jobs are skipped). Then one table,
``benchmarks/results/accuracy.md`` (and ``.json``): mean ± std over folds per cell, fair and
paper protocol, beside the paper's figures and Errica et al.'s fair re-evaluation.

Every finished job's ``results.json`` (its fold's curves, fair result, wall time and config) is
archived under ``benchmarks/results/accuracy_runs/<sweep>/<job>/`` while the sweep runs, and the
table is computed from that archive. A sweep first restores the archived jobs into its working
directory, so a sweep continued on another machine or in a fresh clone runs only the jobs that
have not finished anywhere.

    python benchmarks/accuracy/run.py --epochs 100 --jobs 2            # the CPU budget
    python benchmarks/accuracy/run.py --epochs 1000 --trainer gpu      # the paper's budget
    python benchmarks/accuracy/run.py --report-only                    # table from the runs

A longer budget of a finished sweep need not start again: ``--continue-from NAME`` copies the
checkpoints of the sweep named ``NAME`` (same overrides, fewer epochs) into the new sweep's
jobs, which continue from their last epoch and end as if run from the start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from diffpool.training.report import NOT_RECORDED, code_summary, job_files
from diffpool.training.run import CHECKPOINTS
from diffpool.training.run import FAILED as FAILED_FILE
from diffpool.training.run import HISTORY as HISTORY_FILE
from diffpool.training.run import RESULTS as RESULTS_FILE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARCHIVE = RESULTS / "accuracy_runs"
#: what was tried where a cell falls short, appended to the table as written
NOTES = HERE / "notes.md"
#: how often (seconds) a running sweep's finished jobs are archived
ARCHIVE_EVERY = 60
DEFAULT_TU = ROOT.parent / "shared" / "data" / "TU"
MODELS = ("base", "set2set", "sortpool", "det", "nolp", "diffpool")
#: the rows without a pooling level, which settings of the pooling alone leave unchanged
FLAT_MODELS = ("base", "set2set", "sortpool")
#: config entries that only the pooling models read
POOLING_KEYS = (
    "model.budget",
    "model.num_clusters",
    "model.ratio",
    "model.num_levels",
    "model.assignment",
    "model.link_loss",
    "model.entropy_loss",
)
DATASETS = {"ENZYMES": "enzymes", "DD": "dd", "COLLAB": "collab", "PROTEINS": "proteins"}

#: test accuracy (%) published in the paper (Ying et al., 2018, Table 1)
PAPER = {
    "base": {"ENZYMES": 54.25, "DD": 75.42, "COLLAB": 68.25, "PROTEINS": 70.48},
    "set2set": {"ENZYMES": 60.15, "DD": 78.12, "COLLAB": 71.75, "PROTEINS": 74.29},
    "sortpool": {"ENZYMES": 57.12, "DD": 79.37, "COLLAB": 73.76, "PROTEINS": 75.54},
    "det": {"ENZYMES": 58.33, "DD": 75.47, "COLLAB": 82.13, "PROTEINS": 75.62},
    "nolp": {"ENZYMES": 61.95, "DD": 79.98, "COLLAB": 75.58, "PROTEINS": 76.22},
    "diffpool": {"ENZYMES": 62.53, "DD": 80.64, "COLLAB": 75.48, "PROTEINS": 76.25},
}
#: DiffPool in the fair re-evaluation of Errica et al. (ICLR 2020), mean ± std
ERRICA = {"ENZYMES": (59.5, 5.6), "DD": (75.0, 3.5), "COLLAB": (68.9, 2.0), "PROTEINS": (73.7, 3.5)}


def sweep_name(dataset: str, args, name: str | None = None) -> str:
    """The sweep directory of a dataset: its key, then ``-<name>`` for a named setting
    (``--name``, or ``name`` where given)."""
    name = args.name if name is None else name
    return DATASETS[dataset] + (f"-{name}" if name else "")


def archive_runs(sweep_dir: Path, archive_dir: Path) -> int:
    """Copy every job's ``results.json`` / ``failed.json`` under ``sweep_dir`` into
    ``archive_dir`` (same job directory names); returns how many were new or changed."""
    copied = 0
    if not sweep_dir.is_dir():
        return copied
    for name in (RESULTS_FILE, FAILED_FILE):
        for path in job_files(sweep_dir, name):
            target = archive_dir / path.relative_to(sweep_dir)
            if target.exists() and target.read_bytes() == path.read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied += 1
    return copied


def restore_runs(archive_dir: Path, sweep_dir: Path) -> int:
    """Put the archived finished jobs back into ``sweep_dir`` where a job directory has no
    ``results.json`` yet, so that the sweep skips them; failed jobs are not restored (they run
    again). Returns how many were restored."""
    restored = 0
    if not archive_dir.is_dir():
        return restored
    for path in job_files(archive_dir, RESULTS_FILE):
        target = sweep_dir / path.relative_to(archive_dir)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            restored += 1
    return restored


#: the epoch budget in a job directory's name (Hydra's override_dirname, items joined by ",")
EPOCHS_ITEM = re.compile(r"(?:^|(?<=,))trainer\.max_epochs=(\d+)(?=,|$)")


def continue_runs(source_dir: Path, sweep_dir: Path, epochs: int) -> int:
    """Seed the jobs of a sweep of ``epochs`` epochs with the checkpoints of the same jobs
    (the same overrides but for ``trainer.max_epochs``) of a shorter sweep, so that they
    continue from its last epoch (``resume=true``) instead of starting again.

    The runs are seeded per epoch, so a continued job ends exactly as a job run for
    ``epochs`` from the start, its history and clock included. Only ``checkpoints/`` and
    ``history.csv`` are copied; the shorter sweep is left as it was. Jobs that already have
    checkpoints or results here are left alone, and a job whose config has a learning-rate
    scheduler is refused (a schedule may depend on ``trainer.max_epochs``). Returns how many
    jobs were seeded."""
    if not source_dir.is_dir():
        raise SystemExit(f"--continue-from: {source_dir} does not exist")
    plans = []
    for last in sorted(source_dir.glob(f"*/{CHECKPOINTS}/last.ckpt")):
        job = last.parents[1]
        found = EPOCHS_ITEM.search(job.name)
        if found is None or int(found.group(1)) >= epochs:
            continue
        target = sweep_dir / (job.name[: found.start(1)] + str(epochs) + job.name[found.end(1) :])
        if (target / CHECKPOINTS).exists() or (target / RESULTS_FILE).exists():
            continue
        config = job / ".hydra" / "config.yaml"
        if config.exists() and (OmegaConf.load(config).get("module") or {}).get("scheduler"):
            raise SystemExit(
                f"--continue-from: {job.name} has a learning-rate scheduler, which may depend "
                "on trainer.max_epochs; run this sweep from the start instead"
            )
        plans.append((job, target))
    for job, target in plans:  # nothing is copied unless every job can be continued
        shutil.copytree(job / CHECKPOINTS, target / CHECKPOINTS)
        if (job / HISTORY_FILE).exists():
            shutil.copyfile(job / HISTORY_FILE, target / HISTORY_FILE)
    return len(plans)


def sweep_command(dataset: str, args, sweep_dir: Path) -> list[str]:
    """The ``diffpool-train -m`` line of one dataset's sweep. ``resume=true``: a job that was
    stopped mid-way (its directory holds ``checkpoints/last.ckpt`` but no ``results.json``)
    continues from its last epoch instead of failing; finished jobs are skipped either way."""
    key = DATASETS[dataset]
    presets = ",".join(f"paper_{key}_{m}" for m in args.models)
    cmd = [
        str(Path(sys.executable).parent / "diffpool-train"),
        "-m",
        f"experiment={presets}",
        f"data.fold=range({args.folds})",
        f"data.root={args.data_root}",
        f"trainer={args.trainer}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir}",
        "resume=true",
    ]
    if args.jobs > 1:
        cmd += ["launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    cmd += args.overrides
    return cmd


def sweep(dataset: str, args) -> None:
    name = sweep_name(dataset, args)
    sweep_dir, archive_dir = Path(args.runs) / name, Path(args.archive) / name
    restored = restore_runs(archive_dir, sweep_dir)
    if restored:
        print(f"{dataset}: {restored} finished jobs restored from {archive_dir}", flush=True)
    if args.continue_from is not None:
        source = Path(args.runs) / sweep_name(dataset, args, args.continue_from)
        seeded = continue_runs(source, sweep_dir, args.epochs)
        print(f"{dataset}: {seeded} jobs continue from the checkpoints of {source}", flush=True)
    cmd = sweep_command(dataset, args, sweep_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            proc.wait(timeout=ARCHIVE_EVERY)
            break
        except subprocess.TimeoutExpired:
            archive_runs(sweep_dir, archive_dir)
    archive_runs(sweep_dir, archive_dir)
    if proc.returncode != 0:
        print(f"{dataset}: some jobs failed (see failed.json files in {sweep_dir})", flush=True)


def collect(archive_dir: Path) -> dict:
    from diffpool.training.report import collect as collect_groups

    cells = {}
    if not archive_dir.exists():
        return cells
    groups, failed = collect_groups(archive_dir)
    for group in groups:
        variant = group.config.get("model.variant")
        fair, fair_std = group.fair()
        paper, paper_std, best = group.paper()
        cells[variant] = dict(
            folds=len(group.runs),
            epochs=group.epochs(),
            # None: the runs have no validation set (data.val_ratio=0), the paper protocol only
            fair=None if math.isnan(fair) else [100 * fair, 100 * fair_std],
            paper=[100 * paper, 100 * paper_std],
            paper_epoch=best,
            wall_time_s=group.wall_time(),
            code=group.code(),
        )
    for f in failed:
        cells.setdefault("failed", []).append(f)
    return cells


def _cell(value, published=None) -> str:
    if value is None:
        return "—"
    mean, std = value
    text = f"{mean:.1f} ± {std:.1f}"
    if published is not None:
        text += f" ({mean - published:+.1f})"
    return text


def column_commands(info: dict) -> list[str]:
    """The commands that ran a column's jobs (columns written before the list held one
    ``command``)."""
    return info.get("commands") or ([info["command"]] if "command" in info else [])


def column_overrides(info: dict) -> list[str]:
    """The Hydra overrides the commands of a column gave every job (``key=value`` words)."""
    words = [w for c in column_commands(info) for w in c.split()]
    return sorted({w for w in words if "=" in w and not w.startswith("-")})


def column_code(info: dict) -> str:
    """``"; code: abc1234"``: the commits the column's jobs ran on, where they recorded one
    (nothing for a column whose jobs all predate the record)."""
    counts = Counter()
    for key, cell in info["cells"].items():
        if key != "failed":
            counts.update(cell.get("code", {}))
    if set(counts) <= {NOT_RECORDED}:
        return ""
    return f"; code: {code_summary(dict(sorted(counts.items())))}"


def missing_cell(model: str, label: str, info: dict) -> str:
    """What a column says where it has no result for ``model``: a flat model in a column whose
    overrides only concern the pooling would be the same run as the dataset's plain column."""
    overrides = column_overrides(info)
    if model in FLAT_MODELS and overrides and all(o.startswith(POOLING_KEYS) for o in overrides):
        return f"same as {label.split(' (')[0]} (no pooling)"
    return "not run"


def write_table(results: dict, path: Path) -> None:
    datasets = sorted(results["datasets"], key=_column_order)
    lines = [
        "# Accuracy: the paper's table, stratified 10-fold CV",
        "",
        "Presets `conf/experiment/paper_<dataset>_<model>.yaml` (hidden 64, one pooling level "
        f"at ratio 0.1, batch 20, Adam 1e-3); machine: {results['machine']}. The command, "
        "epochs and training time of every column are listed below the table.  ",
        "Test accuracy (%), mean ± std over folds; in brackets the difference to the "
        "published figure. **fair**: each fold tested at its best-validation epoch. "
        "**paper** (optimistic): the epoch with the best mean test-fold accuracy, selected "
        "on the test folds as in the authors' code. A fold reruns exactly only with the code, "
        "libraries and thread count that ran it: each job records them (`provenance` in its "
        "results.json), and the column lines below name the commits (jobs that ran before "
        "this was recorded name none).",
        "",
        "| model | protocol | " + " | ".join(datasets) + " |",
        "|---|---|" + "---|" * len(datasets),
    ]
    for model in MODELS:
        published = [f"{PAPER[model][d.split(' ')[0]]:.2f}" for d in datasets]
        lines.append(f"| {model} | published (paper) | " + " | ".join(published) + " |")
        for protocol in ("paper", "fair"):
            cells = []
            for d in datasets:
                cell = results["datasets"][d]["cells"].get(model)
                ref = PAPER[model][d.split(" ")[0]] if protocol == "paper" else None
                if cell is None:
                    cells.append(missing_cell(model, d, results["datasets"][d]))
                    continue
                text = _cell(cell[protocol], ref)
                if cell["folds"] < 10:
                    text += f" [{cell['folds']} folds]"
                cells.append(text)
            lines.append(f"| | ours, {protocol} | " + " | ".join(cells) + " |")
    errica = [f"{ERRICA[d.split(' ')[0]][0]} ± {ERRICA[d.split(' ')[0]][1]}" for d in datasets]
    lines.append("| diffpool | fair re-evaluation (Errica et al.) | " + " | ".join(errica) + " |")
    lines += ["", "Per column: command, epochs, training time (all models and folds, summed):", ""]
    for d in datasets:
        info = results["datasets"][d]
        commands = column_commands(info) or ["?"]
        lines.append(
            f"- {d}: " + " and ".join(f"`{c}`" for c in commands) + f"; {info.get('epochs', '?')} "
            f"epochs on `{info.get('trainer', '?')}`; {info['wall_time_s'] / 60:.0f} min"
            + column_code(info)
        )
    lines += [
        "",
        "Against the goals (DiffPool within 2 points of the paper under the paper "
        "protocol, above Errica et al. under the fair one):",
        "",
    ]
    lines += goal_lines(results, datasets)
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    path.write_text("\n".join(lines) + "\n")


def goal_lines(results: dict, datasets: list[str]) -> list[str]:
    """One line per column on DiffPool's goals, and the cells short of their published figure
    by more than 2 points (paper protocol)."""
    lines, short = [], []
    for d in datasets:
        cells, published = results["datasets"][d]["cells"], d.split(" ")[0]
        for model in MODELS:
            cell = cells.get(model)
            if cell is not None and cell["paper"][0] < PAPER[model][published] - 2:
                short.append(f"{d} {model} ({cell['paper'][0] - PAPER[model][published]:+.1f})")
        cell = cells.get("diffpool")
        if cell is None:
            lines.append(f"- {d}: DiffPool not run")
            continue
        paper_gap = cell["paper"][0] - PAPER["diffpool"][published]
        if cell["fair"] is None:
            fair_text = "no fair protocol (no validation set)"
        else:
            fair_gap = cell["fair"][0] - ERRICA[published][0]
            fair_text = (
                f"fair protocol {fair_gap:+.1f} against Errica et al. "
                f"({'met' if fair_gap > 0 else 'NOT met'})"
            )
        lines.append(
            f"- {d}: paper protocol {paper_gap:+.1f} points against the paper "
            f"({'met' if paper_gap >= -2 else 'NOT met'}); {fair_text}"
            + (f"; {cell['folds']} of 10 folds so far" if cell["folds"] < 10 else "")
        )
    lines.append(
        "- more than 2 points below the published figure (paper protocol): "
        + (", ".join(short) if short else "none")
    )
    return lines


def write_plot(results: dict, path: Path) -> None:
    """One panel per column: the published figure and ours under both protocols (mean ± std
    over folds) for every model, and Errica et al.'s fair DiffPool as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = sorted(results["datasets"], key=_column_order)
    ncols = min(3, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.5), squeeze=False, sharey=True
    )
    for ax in axes.flat[len(datasets) :]:
        ax.set_visible(False)
    x, width = np.arange(len(MODELS)), 0.27
    for ax, d in zip(axes.flat, datasets):
        cells, published = results["datasets"][d]["cells"], d.split(" ")[0]
        ax.bar(
            x - width,
            [PAPER[m][published] for m in MODELS],
            width,
            color="0.7",
            label="published (paper)",
        )
        for shift, protocol, color in ((0, "paper", "tab:blue"), (width, "fair", "tab:orange")):
            values = [cells[m][protocol] if m in cells else None for m in MODELS]
            mean = [v[0] if v is not None else np.nan for v in values]
            std = [v[1] if v is not None else 0 for v in values]
            ax.bar(
                x + shift,
                mean,
                width,
                yerr=std,
                color=color,
                capsize=2,
                label=f"ours, {protocol} protocol",
            )
        ax.axhline(
            ERRICA[published][0], color="k", ls="--", lw=0.8, label="DiffPool, Errica et al. (fair)"
        )
        epochs = results["datasets"][d].get("epochs", "?")
        # a long column name "DD (setting)" goes on a line of its own so titles never overlap
        name = d.replace(" (", "\n(", 1) if len(d) > 24 else d
        ax.set_title(f"{name}, {epochs} epochs", fontsize=10 if "\n" in name else None)
        ax.set_xticks(x, MODELS, rotation=30)
        ax.set_ylim(30, 100)
    for row in axes:
        row[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 / nrows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _column_order(label: str):
    order = {d: i for i, d in enumerate(DATASETS)}
    return order.get(label.split(" ")[0], 99), label


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="*", default=["ENZYMES", "PROTEINS", "DD", "COLLAB"])
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--trainer", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="parallel jobs (joblib launcher)")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per job")
    p.add_argument("--tu-dir", default=str(DEFAULT_TU), help="where the official zips are")
    p.add_argument(
        "--data-root",
        default=str(ROOT / "benchmarks" / ".cache" / "tu"),
        help="writable dataset root (the zips are copied here)",
    )
    p.add_argument(
        "--runs",
        default=str(ROOT / "benchmarks" / ".cache" / "accuracy"),
        help="the sweeps' working directories (checkpoints, logs)",
    )
    p.add_argument(
        "--archive", default=str(ARCHIVE), help="where finished jobs' results.json are kept"
    )
    p.add_argument("--out", default=str(RESULTS / "accuracy"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--name",
        default="",
        help="a second setting of a dataset, e.g. --name per_graph model.budget=per_graph: "
        "its own sweep directory and its own column",
    )
    p.add_argument(
        "--continue-from",
        default=None,
        metavar="NAME",
        help="continue the jobs of the sweep named NAME ('' for the unnamed one), run for "
        "fewer --epochs with the same overrides, from their last checkpoints in --runs",
    )
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = p.parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/accuracy/run.py " + " ".join(argv or sys.argv[1:])
    for dataset in args.datasets:
        root, archive = Path(args.data_root), Path(args.tu_dir) / f"{dataset}.zip"
        root.mkdir(parents=True, exist_ok=True)
        if archive.exists() and not (root / archive.name).exists():
            shutil.copy(archive, root / archive.name)
        available = dataset in ("ENZYMES", "PROTEINS", "MUTAG") or any(
            (root / name).exists() for name in (f"{dataset}.zip", dataset)
        )
        if not available:
            print(f"skip {dataset}: no offline copy in {args.data_root}", flush=True)
            continue
        if not args.report_only:
            sweep(dataset, args)
        cells = collect(Path(args.archive) / sweep_name(dataset, args))
        label = dataset + (f" ({args.name})" if args.name else "")
        if not cells:
            print(f"{label}: no archived jobs; the table keeps its earlier column", flush=True)
            continue
        if args.report_only:
            update_column(out, label, cells, None, {})
        else:
            ran = dict(epochs=args.epochs, trainer=args.trainer)
            update_column(out, label, cells, command, ran)
    write_report(out)


def update_column(out: Path, label: str, cells: dict, command: str | None, ran: dict) -> None:
    """Put one column into ``out.json`` (:func:`write_report` then writes the table and the
    plot from it). The file is read here, not when the driver starts, so that drivers running
    other columns at the same time do not drop each other's; a column lists every command that
    contributed jobs to it."""
    path = out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    earlier = results["datasets"].get(label, {})
    commands = column_commands(earlier)
    if command is not None and command not in commands:
        commands.append(command)
    earlier.pop("command", None)
    wall = sum(c["wall_time_s"] for k, c in cells.items() if k != "failed")
    results["datasets"][label] = dict(
        earlier, cells=cells, wall_time_s=wall, commands=commands, **ran
    )
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def write_report(out: Path) -> None:
    """``out.md`` and ``out.png`` from ``out.json``."""
    path = out.with_suffix(".json")
    if not path.exists():
        return
    results = json.loads(path.read_text())
    write_table(results, out.with_suffix(".md"))
    write_plot(results, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
