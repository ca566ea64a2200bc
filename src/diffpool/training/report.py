"""A sweep's jobs grouped by config without the fold: mean ± std over folds (``ddof=0``, as in
Errica et al.'s code) under both protocols. Runs on a dataset's own split (``data.split=dataset``,
OGB's) have one fold and repeat over seeds: they are grouped without the seed, mean ± std over
seeds, as OGB reports.

* ``fair``: each fold's test metric at the epoch of its best validation metric.
* ``paper`` (optimistic, the authors' code): the best epoch of the mean test-fold curve.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import textwrap
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffpool.training.results import (
    FAILED,
    HISTORY,
    NOT_IDENTITY,
    RESULTS,
    RunFailure,
    RunResult,
    best_epoch,
)
from diffpool.utils import files
from diffpool.utils.extras import missing
from diffpool.utils.provenance import code_label

log = logging.getLogger(__name__)

LABEL_FIRST = ("data.name", "model.variant", "model.encoder")  # named first in a label
IGNORED_KEYS = ("data.fold", "optimized_metric", *NOT_IDENTITY)  # define no configuration
#: with a dataset's own split (one fold), the repetitions are seeds: these define no configuration
SEED_KEYS = ("seed", "module.seed", "data.seed")
PERCENT_METRICS = ("acc",)
UNKNOWN_CODE = "—"  # the code of results that recorded none
HEADER = ("configuration", "folds", "epochs", "fair", "paper (optimistic)", "paper epoch",
          "val (fair)", "wall time", "code")  # fmt: skip
ROW_FIELDS = ("configuration", "metric", "folds", "epochs", "fair_test_mean", "fair_test_std",
              "fair_val_mean", "paper_test_mean", "paper_test_std", "paper_best_epoch",
              "wall_time_s", "code")  # fmt: skip
#: the panels of ``curves.png``: the runs' metric, then the task's loss and the pooling losses
CURVE_METRIC = ("train/{metric}", "val/{metric}", "heldout/{metric}")
CURVE_LOSSES = ("train/ce", "val/ce", "train/bce", "val/bce", "train/l1", "val/l1", "train/mse",
                "val/mse", "train/link_loss", "train/entropy_loss")  # fmt: skip


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists become JSON strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)


@dataclass
class Group:
    """The finished folds of one configuration."""

    config: dict[str, Any]
    label: str = ""
    runs: list[RunResult] = field(default_factory=list)
    metric: str = "acc"
    higher_is_better: bool = True

    def fair(self) -> tuple[float, float]:
        """Mean ± std over folds of the test metric at each fold's best validation epoch
        (NaN without validation sets); a fold whose test has no value (NaN: a ROC-AUC of one
        class) is left out, as an epoch without one is in :meth:`paper` (warned about by
        :func:`group_runs`)."""
        tests = [r.fair.test for r in self.runs if r.fair.test is not None]
        return _mean_std([t for t in tests if not math.isnan(t)])

    def paper(self) -> tuple[float, float, int]:
        """Mean ± std over folds at the best epoch (from 0; -1 without curves) of the mean
        test-fold curve, over the epochs every fold reached."""
        length = min((len(r.test_curve) for r in self.runs), default=0)
        if length == 0:
            return math.nan, math.nan, -1
        table = np.array([r.test_curve[:length] for r in self.runs], dtype=float)
        with warnings.catch_warnings():  # an epoch no fold logged: NaN, left out
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(table, axis=0)
        best = best_epoch(mean.tolist(), self.higher_is_better)
        if best < 0:
            return math.nan, math.nan, -1
        return float(mean[best]), float(np.nanstd(table[:, best])), best

    @property
    def over_seeds(self) -> bool:
        """Whether the runs are a dataset's own split repeated over seeds (not folds)."""
        return self.config.get("data.split") == "dataset"

    def wall_time(self) -> float:
        return float(sum(r.wall_time_s for r in self.runs))

    def epochs(self) -> int:
        return max((r.epochs for r in self.runs), default=0)

    def code(self) -> dict[str, int]:
        """Folds per code (:func:`~diffpool.utils.provenance.code_label`, else
        :data:`UNKNOWN_CODE`)."""
        counts = Counter(code_label(r.provenance) or UNKNOWN_CODE for r in self.runs)
        return dict(sorted(counts.items()))


def code_summary(counts: dict[str, int]) -> str:
    """``"abc1234"`` where every fold ran on one code, else ``"abc1234 ×6, def5678 ×4"``."""
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{label} ×{n}" for label, n in counts.items())


def load_runs(source: str | Path) -> tuple[list[RunResult], list[RunFailure]]:
    """The finished and the failed runs under the directory ``source``: its ``results.json``
    and ``failed.json`` files (a job with both finished; ``replaced-*/`` left out)."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory")
    found = {
        name: [p.parent for p in sorted(source.rglob(name))
               if not any(part.startswith("replaced-") for part in p.relative_to(source).parts)]
        for name in (RESULTS, FAILED)
    }  # fmt: skip
    runs = [RunResult.load(job) for job in found[RESULTS]]
    failed = [RunFailure.load(job) for job in found[FAILED] if job not in found[RESULTS]]
    if not runs and not failed:
        raise FileNotFoundError(f"no {RESULTS} or {FAILED} under {source}")
    return runs, failed


def _label(groups: list[Group], keys: set[str]) -> None:
    """Append to each group's label the ``keys`` whose values differ between ``groups``."""
    varying = [k for k in keys if len({str(g.config.get(k)) for g in groups}) > 1]
    varying.sort(key=lambda k: (LABEL_FIRST.index(k) if k in LABEL_FIRST else 9, k))
    for g in groups:
        parts = [g.label] + [f"{k}={g.config[k]}" for k in varying if k in g.config]
        dataset = g.config.get("data.name") or (g.runs[0].dataset if g.runs else "?")
        g.label = ", ".join(filter(None, parts)) or (
            f"{dataset} / {g.config.get('model.variant', '?')}"
        )


def group_runs(runs: Iterable[RunResult]) -> list[Group]:
    """Group runs by their config without :data:`IGNORED_KEYS`, labelled by the entries that
    every group has and that differ; groups left alike add the other entries that differ."""
    groups: dict[str, Group] = {}
    for run in runs:
        flat = flatten(run.config)
        repeats = SEED_KEYS if flat.get("data.split") == "dataset" else ()
        config = {k: v for k, v in flat.items()
                  if not k.startswith(IGNORED_KEYS) and k not in repeats}  # fmt: skip
        key = json.dumps(config, sort_keys=True, default=str)
        group = Group(config, metric=run.metric, higher_is_better=run.higher_is_better)
        groups.setdefault(key, group).runs.append(run)
    found = list(groups.values())
    common = set.intersection(*(set(g.config) for g in found)) if found else set()
    _label(found, common)
    for label in {g.label for g in found}:
        alike = [g for g in found if g.label == label]
        if len(alike) > 1:
            _label(alike, set.union(*(set(g.config) for g in alike)) - common)
    for g in found:  # the same fold twice (a run copied in) would count twice in the mean
        unscored = [r.fold for r in g.runs if r.fair.test is not None and math.isnan(r.fair.test)]
        if unscored:
            log.warning("%s: folds %s have no fair test value (NaN, e.g. a test set of one "
                        "class): left out of its mean", one_line(g.label), unscored)  # fmt: skip
        repeats = [(r.fold, flatten(r.config).get("seed")) for r in g.runs]
        if len(set(repeats)) < len(repeats):
            twice = sorted({f for f in repeats if repeats.count(f) > 1}, key=str)[0]
            which = f"fold {twice[0]}" + ("" if twice[1] is None else f" of seed {twice[1]}")
            paths = ", ".join(str(r.path) for r, f in zip(g.runs, repeats) if f == twice)
            log.warning("%s holds %s more than once (%s): each counts in its mean",
                        one_line(g.label), which, paths)  # fmt: skip
    return sorted(found, key=lambda g: g.label)


def collect(source: str | Path) -> tuple[list[Group], list[RunFailure]]:
    """The groups of :func:`group_runs` and the failed runs of ``source`` (:func:`load_runs`)."""
    runs, failed = load_runs(source)
    return group_runs(runs), failed


def format_metric(mean: float, std: float | None = None, metric: str = "acc",
                  digits: int | None = None) -> str:  # fmt: skip
    """``"62.33 ± 6.29"``: in percent for :data:`PERCENT_METRICS`, with ``digits`` decimals
    (default: 2 in percent, else 4); ``"n/a"`` for NaN."""
    if mean is None or math.isnan(mean):
        return "n/a"
    scale, default = (100, 2) if metric in PERCENT_METRICS else (1, 4)
    digits = default if digits is None else digits
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def rows(groups: list[Group]) -> list[dict[str, Any]]:
    """Each configuration's figures under both protocols (:data:`ROW_FIELDS`)."""
    found = []
    for g in groups:
        val = _mean_std([r.fair.val for r in g.runs if r.fair.val is not None])[0]
        values = (g.label, g.metric, len(g.runs), g.epochs(), *g.fair(), val, *g.paper(),
                  round(g.wall_time(), 1), code_summary(g.code()))  # fmt: skip
        found.append(dict(zip(ROW_FIELDS, values)))
    return found


def one_line(value: Any) -> str:
    """``value`` as text on one line, the characters that are not printable escaped
    (``\\n``, ``\\x1b``, ``\\u2028``): a value from a run's files starts no line of a report."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(value))


def markdown(groups: list[Group], failed: list[RunFailure], sweep_dir: str | Path) -> str:
    """The report as markdown: one table row per configuration, then the failed jobs."""
    metrics = sorted({one_line(g.metric) for g in groups}) or ["acc"]
    lower = sorted({one_line(g.metric) for g in groups if not g.higher_is_better})
    lines = [
        f"# Report of `{one_line(sweep_dir)}`",
        "",
        f"Test {', '.join(metrics)} as mean ± std over folds (over seeds on a dataset's own "
        "split; accuracy in %"
        + "".join(f"; {m}: lower is better" for m in lower)
        + "). **fair**: each fold tested at its best validation epoch. **paper** (optimistic): "
        "the epoch with the best mean test-fold metric, as in the authors' code.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---" * len(HEADER) + "|",
    ]
    for g, r in zip(groups, rows(groups)):
        m = r["metric"]
        count = f"{r['folds']} seeds" if g.over_seeds else r["folds"]
        cells = (r["configuration"], count, r["epochs"],
                 format_metric(r["fair_test_mean"], r["fair_test_std"], m),
                 format_metric(r["paper_test_mean"], r["paper_test_std"], m),
                 r["paper_best_epoch"], format_metric(r["fair_val_mean"], None, m),
                 f"{r['wall_time_s']:.0f} s", r["code"])  # fmt: skip
        lines.append("| " + " | ".join(one_line(c).replace("|", "\\|") for c in cells) + " |")
    if failed:
        lines += ["", f"## Failed jobs ({len(failed)})", ""]
        lines += [f"- `{one_line(f.path)}`: {one_line(' '.join(f.error.split()))}" for f in failed]
    return "\n".join(lines) + "\n"


@files.plain_text()  # labels come from the runs' files: no mathtext
def plot(groups: list[Group], path: Path) -> None:
    """Both protocols' test metric per configuration, mean ± std over folds, as horizontal
    bars (every label whole) with the legend above the axes (covering no bar); one panel per
    metric where the runs used several."""
    from matplotlib.figure import Figure  # no pyplot: no backend, nothing to close

    panels: dict[tuple[str, bool], list[Group]] = {}
    for g in groups:
        panels.setdefault((g.metric, g.higher_is_better), []).append(g)
    width = 6.0 + 0.065 * max(len(one_line(g.label)) for g in groups)
    fig = Figure(figsize=(width, 0.9 * len(panels) + 0.3 + 0.55 * len(groups)))
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        height_ratios=[len(p) for p in panels.values()])[:, 0]  # fmt: skip
    for ax, ((metric, higher), panel) in zip(axes, panels.items()):
        scale = 100 if metric in PERCENT_METRICS else 1
        y = np.arange(len(panel))[::-1]
        stats = {"fair": [g.fair() for g in panel], "paper": [g.paper()[:2] for g in panel]}
        for offset, key, name in ((0.19, "fair", "fair"), (-0.19, "paper", "paper (optimistic)")):
            mean, std = scale * np.array(stats[key]).T
            ax.barh(y + offset, mean, 0.38, xerr=std, capsize=3, label=name)
        ax.set_yticks(y, [one_line(g.label) for g in panel], fontsize=8)
        ax.set_xlabel(f"test {metric}{' (%)' * (scale == 100)}, mean ± std over folds"
                      + ("" if higher else ", lower is better"))  # fmt: skip
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8,
                   frameon=False)  # fmt: skip
    fig.tight_layout()
    files.save_figure(fig, path, dpi=120, bbox_inches="tight")


def curve_spread(group: Group) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The metrics of all the group's ``history.csv`` files (none for runs read from an
    archive; one that cannot be read is left out, with a warning) as (mean, std over folds)
    per epoch, over the epochs every fold reached; NaN where no fold has a value."""
    tables = []
    for path in [Path(r.path) / HISTORY for r in group.runs if r.path is not None]:
        try:
            tables.append(read_history(path) if os.path.lexists(path) else [])
        except (ValueError, OSError) as err:  # a dangling link, no permission: the rest is drawn
            log.warning("curves.png: %s: left out", one_line(err))
    tables = [t for t in tables if t]
    if not tables:
        return {}
    length = min(map(len, tables))
    spread = {}
    with warnings.catch_warnings():  # numpy warns of all-NaN epochs
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in sorted(set.intersection(*(set(t[0]) for t in tables)) - {"epoch"}):
            values = np.array([[row.get(key, math.nan) for row in t[:length]] for t in tables])
            spread[key] = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    return spread


#: the largest ``history.csv`` read (a row per epoch of some dozens of numbers)
MAX_HISTORY_BYTES = 64 * 2**20


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``history.csv`` as numbers (an empty cell: NaN), a regular file of at
    most :data:`MAX_HISTORY_BYTES`.

    Raises:
        ValueError: the file is not a regular file of that size, not CSV, or holds a cell that
            is no number; the message names the file.
    """
    text = files.read_regular(path, MAX_HISTORY_BYTES, "history file").decode("utf-8", "replace")
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        return [{k: float(v or "nan") for k, v in row.items()} for row in rows]
    except (csv.Error, ValueError, TypeError) as err:  # a long field, text, a ragged row
        raise ValueError(f"history file {path} is not a table of numbers ({err})") from None


def drawn_series(curves: dict[str, tuple[np.ndarray, np.ndarray]], keys: Iterable[str],
                 losses: bool = False) -> list[str]:  # fmt: skip
    """The ``keys`` of ``curves`` that have a finite mean at some epoch and, for ``losses``,
    a non-zero one (not a loss the model lacks, e.g. DiffPool-NoLP's link loss)."""
    finite = {k: curves[k][0][np.isfinite(curves[k][0])] for k in keys if k in curves}
    return [k for k, v in finite.items() if v.size and (v.any() or not losses)]


@files.plain_text()  # labels come from the runs' files: no mathtext
def plot_curves(groups: list[Group], path: Path) -> int:
    """Every configuration's learning curves: its metric and every loss (per pooling level),
    mean ± std over folds (:func:`drawn_series`), epochs from 0. Two panels per configuration
    under its title, wrapped to their width; two configurations per row beyond six.

    Returns:
        int: how many configurations were drawn (0: no history, nothing written).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, MaxNLocator

    drawn = [(g, c) for g in groups if (c := curve_spread(g))]
    if not drawn:
        return 0
    per_row = 1 if len(drawn) <= 6 else 2
    nrows = -(-len(drawn) // per_row)
    # a pair of panels is 11 inches wide: a 9-point title wraps at 11 * 72 / (0.62 * 9) chars
    titles = [
        textwrap.fill(f"{one_line(g.label)} ({len(g.runs)} fold{'s' * (len(g.runs) > 1)}, "
                      "mean ± std)", 141, break_on_hyphens=False)
        for g, _ in drawn
    ]  # fmt: skip
    lines = max(t.count("\n") + 1 for t in titles)
    # constrained layout: every title keeps its room, whatever its length
    fig = Figure(figsize=(11.0 * per_row, (2.8 + 0.2 * lines) * nrows), layout="constrained")
    pairs = fig.subfigures(nrows, per_row, squeeze=False).flat
    for (group, c), title, pair in zip(drawn, titles, pairs):
        pair.suptitle(title, fontsize=9)
        scale = 100 if group.metric in PERCENT_METRICS else 1
        panels = (
            (drawn_series(c, [k.format(metric=group.metric) for k in CURVE_METRIC]),
             scale, group.metric + " (%)" * (scale == 100)),
            (drawn_series(c, [k for k in c if k.startswith(CURVE_LOSSES)], losses=True),
             1, "loss"),
        )  # fmt: skip
        for ax, (keys, factor, ylabel) in zip(pair.subplots(1, 2), panels):
            for key in keys:
                mean, std = factor * c[key][0], factor * c[key][1]
                epochs = np.arange(len(mean))
                (line,) = ax.plot(epochs, mean, marker="o" if len(mean) <= 30 else None,
                                  markersize=3, label=key)  # fmt: skip
                if len(group.runs) > 1:
                    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(),
                                    alpha=0.15, linewidth=0)  # fmt: skip
            if keys:
                ax.legend(fontsize=7)
            if keys and ylabel == "loss":  # plain labels: the log ones are mathtext, off here
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(LogFormatter())
                ax.yaxis.set_minor_formatter(LogFormatter())
            ax.set(xlabel="epoch", ylabel=ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    files.save_figure(fig, path, dpi=90)
    return len(drawn)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and, with the ``viz`` extra, ``report.png`` and
    ``curves.png`` into ``out_dir`` (default: ``sweep_dir``), each whole and never through a
    link (:func:`diffpool.utils.files.write_atomically`).

    Returns:
        dict: the paths written, by kind (``md``, ``csv``, ``png``, ``curves``).

    Raises:
        UnsafeDestinationError: one of them is a symbolic link (nothing is written).
    """
    groups, failed = collect(sweep_dir)
    out = Path(sweep_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv"}
    plots = {"png": out / "report.png", "curves": out / "curves.png"}
    plots = plots if groups and not missing("viz") else {}
    for path in [*paths.values(), *plots.values()]:
        files.check_destination(path)
    files.write_atomically(paths["md"], markdown(groups, failed, sweep_dir))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, ROW_FIELDS)
    writer.writeheader()
    writer.writerows({**r, **{k: one_line(r[k]) for k in ("configuration", "metric", "code")}}
                     for r in rows(groups))  # fmt: skip
    files.write_atomically(paths["csv"], text.getvalue())
    if plots:
        plot(groups, paths.setdefault("png", plots["png"]))
        drawn = plot_curves(groups, plots["curves"])
        if drawn:
            paths["curves"] = plots["curves"]
        if drawn < len(groups):
            log.warning("curves.png: %d of %d configurations have no history.csv (runs read "
                        "from an archive)", len(groups) - drawn, len(groups))  # fmt: skip
    return paths
