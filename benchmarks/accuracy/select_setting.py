"""Pick one setting of a model among archived accuracy sweeps, on the validation split only.

Every setting is a sweep that ``run.py --name <setting> <overrides>`` ran (archived under
``benchmarks/results/accuracy_runs/<dataset>[-<setting>]/``). For each, the score is the mean
over folds of the best validation accuracy within the first ``E`` epochs, where ``E`` is the
shortest budget among the settings, so that a longer run gets no more chances than a short one.
Only the validation curves are read: no test-fold number enters the choice. The table names
what each setting changed against the first one (from the jobs' configs) and the winner.

    python benchmarks/accuracy/select_setting.py --dataset PROTEINS --model diffpool \
        proteins proteins-dropout05 proteins-wd proteins-both
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from diffpool.training.report import IGNORED_KEYS, Group, collect

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parents[1] / "benchmarks" / "results" / "accuracy_runs"
#: config entries that are the budget or the bookkeeping of a run, not its setting
NOT_A_SETTING = (*IGNORED_KEYS, "trainer.max_epochs", "logger", "callbacks")


def model_group(archive_dir: Path, model: str) -> Group | None:
    """The one configuration of ``model`` (the config's ``model.variant``) in an archived
    sweep, grouped as :func:`diffpool.training.report.collect` groups a sweep, its runs sorted
    by fold; None where the sweep is missing or has none."""
    if not archive_dir.is_dir():
        return None
    groups = [g for g in collect(archive_dir)[0] if g.config.get("model.variant") == model]
    if len(groups) > 1:
        labels = "; ".join(g.label for g in groups)
        raise ValueError(f"{archive_dir} holds several {model!r} configurations: {labels}")
    if not groups:
        return None
    groups[0].runs.sort(key=lambda r: r["fold"])
    return groups[0]


def load_setting(archive_dir: Path, model: str) -> list[dict]:
    """The finished jobs of ``model`` in one archived sweep (:func:`model_group`), one per
    fold: ``fold``, ``val_curve`` and the group's flat ``config``; nothing of the test fold."""
    group = model_group(archive_dir, model)
    if group is None:
        return []
    return [dict(fold=r["fold"], val_curve=r["val_curve"], config=group.config) for r in group.runs]


def changes(config: dict, reference: dict) -> str:
    """The entries of ``config`` that differ from ``reference`` (budget and bookkeeping left
    out), as Hydra overrides."""
    keys = sorted(set(config) | set(reference))
    diff = [
        f"{k}={config.get(k)}"
        for k in keys
        if not k.startswith(NOT_A_SETTING) and config.get(k) != reference.get(k)
    ]
    return " ".join(diff) or "(reference)"


def score(jobs: list[dict], epochs: int) -> tuple[float, float]:
    """Mean ± std over folds of the best validation accuracy within ``epochs`` epochs."""
    best = [max(job["val_curve"][:epochs]) for job in jobs]
    return float(np.mean(best)), float(np.std(best))


def select(archive: Path, sweeps: list[str], model: str, epochs: int | None = None) -> dict:
    """Score every sweep; return the rows and the winner (the highest mean, the earlier sweep
    on a tie). Sweeps must hold the same folds, else the comparison is refused."""
    settings = {name: load_setting(archive / name, model) for name in sweeps}
    empty = [name for name, jobs in settings.items() if not jobs]
    if empty:
        raise ValueError(f"no finished {model!r} jobs in {', '.join(empty)} under {archive}")
    folds = {name: [j["fold"] for j in jobs] for name, jobs in settings.items()}
    reference_folds = folds[sweeps[0]]
    mismatch = [name for name, f in folds.items() if f != reference_folds]
    if mismatch:
        raise ValueError(
            f"settings must hold the same folds to be compared: {sweeps[0]} has "
            f"{reference_folds}, " + ", ".join(f"{n} has {folds[n]}" for n in mismatch)
        )
    shortest = min(len(j["val_curve"]) for jobs in settings.values() for j in jobs)
    epochs = shortest if epochs is None else epochs
    if epochs > shortest:
        raise ValueError(f"--epochs {epochs} is longer than the shortest run ({shortest} epochs)")
    reference = settings[sweeps[0]][0]["config"]
    rows = []
    for name, jobs in settings.items():
        mean, std = score(jobs, epochs)
        change = changes(jobs[0]["config"], reference)
        rows.append(dict(sweep=name, val=[100 * mean, 100 * std], changes=change))
    winner = max(rows, key=lambda r: (r["val"][0], -rows.index(r)))
    winner = winner["sweep"]
    return dict(model=model, epochs=epochs, folds=reference_folds, rows=rows, winner=winner)


def write_markdown(result: dict, dataset: str, command: str, path: Path) -> None:
    lines = [
        f"# Setting selection: {result['model']} on {dataset}",
        "",
        "Score: mean ± std over folds of the best **validation** accuracy (%) within the first "
        f"{result['epochs']} epochs; folds {result['folds']}. No test-fold accuracy is read.",
        "",
        "| sweep | what it changes | validation accuracy |",
        "|---|---|---|",
    ]
    for row in result["rows"]:
        mark = " **(selected)**" if row["sweep"] == result["winner"] else ""
        mean, std = row["val"]
        lines.append(f"| {row['sweep']}{mark} | `{row['changes']}` | {mean:.1f} ± {std:.1f} |")
    lines += ["", f"Command: `{command}`", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweeps", nargs="+", help="archived sweep names; the first is the reference")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", default="diffpool", help="model.variant of the jobs to compare")
    p.add_argument("--epochs", type=int, default=None, help="budget compared (default: shortest)")
    p.add_argument("--archive", default=str(ARCHIVE))
    p.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = p.parse_args(argv)
    result = select(Path(args.archive), args.sweeps, args.model, args.epochs)
    for row in result["rows"]:
        mean, std = row["val"]
        mark = "  <- selected" if row["sweep"] == result["winner"] else ""
        print(f"{row['sweep']:<28} val {mean:5.1f} ± {std:4.1f}  {row['changes']}{mark}")
    if args.out:
        command = "python benchmarks/accuracy/select_setting.py " + " ".join(argv or sys.argv[1:])
        write_markdown(result, args.dataset, command, Path(args.out))
    return result


if __name__ == "__main__":
    main()
