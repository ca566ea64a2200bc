"""Aggregate the jobs of a sweep: mean ± std over folds per configuration, both protocols.

Every job directory under the sweep holds ``results.json`` (see :mod:`diffpool.training.run`)
or ``failed.json``. Jobs are grouped by their config without the fold; a group's label names
the config entries that differ between the groups of the sweep.

* ``fair``: each fold's test accuracy at the epoch of its best validation accuracy.
* ``paper`` (optimistic, the authors' code): the test-fold accuracy curves are averaged over
  the folds and the best epoch of that mean curve is reported, i.e. the epoch is selected on
  the test folds.

Standard deviations are over folds (population, ``ddof=0``, as in Errica et al.'s code).
``curves.png`` shows every configuration's learning curves (accuracies and each loss per
pooling level, mean over folds) from the jobs' ``history.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
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
    RESULTS,
    RunFailure,
    RunResult,
    load_archive,
)
from diffpool.utils import files
from diffpool.utils.extras import missing
from diffpool.utils.provenance import code_label

log = logging.getLogger(__name__)

#: config entries named first in a group's label
LABEL_FIRST = ("data.name", "model.variant", "model.encoder")

#: config entries that never define a configuration
IGNORED_KEYS = ("data.fold", "data.root", "optimized_metric")

#: metrics shown in percent
PERCENT_METRICS = ("acc",)

#: what the code column says for results that recorded no code
UNKNOWN_CODE = "—"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists become strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


@dataclass
class Group:
    """The finished folds of one configuration."""

    config: dict[str, Any]
    label: str = ""
    runs: list[RunResult] = field(default_factory=list)

    @property
    def folds(self) -> list[int]:
        return sorted(r.fold for r in self.runs)

    @property
    def metric(self) -> str:
        return self.runs[0].metric if self.runs else "acc"

    @property
    def higher_is_better(self) -> bool:
        return self.runs[0].higher_is_better if self.runs else True

    def fair(self) -> tuple[float, float]:
        """Mean ± std over folds of the test metric at each fold's best validation epoch
        (NaN for runs without a validation set)."""
        return _mean_std([r.fair.test for r in self.runs if r.fair.test is not None])

    def fair_val(self) -> tuple[float, float]:
        return _mean_std([r.fair.val for r in self.runs if r.fair.val is not None])

    def paper(self, epochs: int | None = None) -> tuple[float, float, int]:
        """Mean ± std over folds at the best epoch (counted from 0) of the mean test-fold
        curve, over the epochs every fold reached, or the first ``epochs`` of them."""
        curves = [r.test_curve for r in self.runs]
        length = min((len(c) for c in curves), default=0)
        if epochs is not None:
            length = min(length, epochs)
        if length == 0:
            return math.nan, math.nan, -1
        table = np.array([c[:length] for c in curves], dtype=float)
        mean = np.nanmean(table, axis=0)
        best = int(np.nanargmax(mean) if self.higher_is_better else np.nanargmin(mean))
        return float(mean[best]), float(np.nanstd(table[:, best])), best

    def wall_time(self) -> float:
        return float(sum(r.wall_time_s for r in self.runs))

    def epochs(self) -> int:
        return max((r.epochs for r in self.runs), default=0)

    def code(self) -> dict[str, int]:
        """How many folds ran on each code (:func:`~diffpool.utils.provenance.code_label`:
        the commit, or the package version outside a git checkout; :data:`UNKNOWN_CODE`
        for results that recorded none)."""
        counts = Counter(code_label(r.provenance) or UNKNOWN_CODE for r in self.runs)
        return dict(sorted(counts.items()))


def code_summary(counts: dict[str, int]) -> str:
    """``"abc1234"`` where every fold ran on one code, else ``"abc1234 ×6, def5678 ×4"``."""
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{label} ×{n}" for label, n in counts.items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values))


def job_files(sweep_dir: Path, name: str) -> list[Path]:
    """The files called ``name`` of a sweep's jobs, leaving out the runs that ``overwrite=true``
    moved to ``replaced-<time>/``."""
    return [
        path
        for path in sorted(sweep_dir.rglob(name))
        if not any(part.startswith("replaced-") for part in path.relative_to(sweep_dir).parts)
    ]


def load_runs(source: str | Path | Iterable[RunResult]) -> tuple[list[RunResult], list[RunFailure]]:
    """The finished and the failed runs of ``source``: a directory searched recursively for
    ``results.json`` / ``failed.json`` (a job that has both finished), an archive file of
    :func:`~diffpool.training.results.save_archive`, or the results themselves."""
    if not isinstance(source, str | Path):
        return list(source), []
    source = Path(source)
    if source.is_file():
        return load_archive(source), []
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory or a results archive")
    runs = [RunResult.load(path.parent) for path in job_files(source, RESULTS)]
    failed = [
        RunFailure.load(path.parent)
        for path in job_files(source, FAILED)
        if not (path.parent / RESULTS).exists()
    ]
    if not runs and not failed:
        raise FileNotFoundError(f"no {RESULTS} or {FAILED} under {source}")
    return runs, failed


def group_runs(runs: Iterable[RunResult]) -> list[Group]:
    """Group runs by their config without the fold (and the other :data:`IGNORED_KEYS`); a
    group's label names the config entries that differ between the groups."""
    groups: dict[str, Group] = {}
    for run in runs:
        config = {k: v for k, v in flatten(run.config).items() if not k.startswith(IGNORED_KEYS)}
        key = json.dumps(config, sort_keys=True, default=str)
        groups.setdefault(key, Group(config)).runs.append(run)
    found = list(groups.values())
    # named by the keys that every group has and that differ between them; groups that this
    # leaves alike (settings only some models have) add the keys that tell them apart
    common = set.intersection(*(set(g.config) for g in found)) if found else set()
    _label(found, _varying(found, common))
    for label in {g.label for g in found}:
        alike = [g for g in found if g.label == label]
        if len(alike) > 1:
            _label(alike, _varying(alike, set.union(*(set(g.config) for g in alike)) - common))
    found.sort(key=lambda g: g.label)
    return found


def collect(
    source: str | Path | Iterable[RunResult],
) -> tuple[list[Group], list[RunFailure]]:
    """Group the finished runs of ``source`` (see :func:`load_runs`); also return the failed
    ones."""
    runs, failed = load_runs(source)
    return group_runs(runs), failed


def _varying(groups: list[Group], keys: set[str]) -> list[str]:
    """The ``keys`` whose values differ between ``groups``, the :data:`LABEL_FIRST` first."""
    varying = {k for k in keys if len({str(g.config.get(k)) for g in groups}) > 1}
    return sorted(
        varying,
        key=lambda k: (k not in LABEL_FIRST, LABEL_FIRST.index(k) if k in LABEL_FIRST else 0, k),
    )


def _label(groups: list[Group], keys: list[str]) -> None:
    for group in groups:
        parts = [f"{k}={group.config[k]}" for k in keys if k in group.config]
        extra = ", ".join(parts)
        if group.label and extra:
            group.label = f"{group.label}, {extra}"
        elif extra or not group.label:
            group.label = extra or _default_label(group)


def _default_label(group: Group) -> str:
    return f"{group.config.get('data.name', '?')} / {group.config.get('model.variant', '?')}"


def format_metric(
    mean: float, std: float | None = None, metric: str = "acc", digits: int | None = None
) -> str:
    """``"62.33 ± 6.29"``: a metric (in percent for :data:`PERCENT_METRICS`) with ``digits``
    decimals (default: 2 in percent, else 4), ``"n/a"`` for NaN."""
    if mean is None or math.isnan(mean):
        return "n/a"
    scale, default = (100, 2) if metric in PERCENT_METRICS else (1, 4)
    digits = default if digits is None else digits
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


ROW_FIELDS = (
    "configuration",
    "metric",
    "folds",
    "epochs",
    "fair_test_mean",
    "fair_test_std",
    "fair_val_mean",
    "paper_test_mean",
    "paper_test_std",
    "paper_best_epoch",
    "wall_time_s",
    "code",
)


def row(group: Group) -> dict[str, Any]:
    """One configuration's figures under both protocols (:data:`ROW_FIELDS`)."""
    fair, fair_std = group.fair()
    val, _ = group.fair_val()
    paper, paper_std, best = group.paper()
    values = (
        group.label,
        group.metric,
        len(group.runs),
        group.epochs(),
        fair,
        fair_std,
        val,
        paper,
        paper_std,
        best,
        round(group.wall_time(), 1),
        code_summary(group.code()),
    )
    return dict(zip(ROW_FIELDS, values))


def rows(groups: list[Group]) -> list[dict[str, Any]]:
    return [row(group) for group in groups]


def one_line(value: Any) -> str:
    """``value`` as text on one line: line breaks and the other characters that are not
    printable written as escapes (``\\n``, ``\\x1b``, ``\\u2028``), so that what a run's
    files hold (a config value) neither starts a line of the report of its own nor hides."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(value))


def _cell(value: Any) -> str:
    """``value`` in one cell of a markdown table (:func:`one_line`, ``|`` escaped)."""
    return one_line(value).replace("|", "\\|")


def markdown(groups: list[Group], failed: list[RunFailure], sweep_dir: str | Path) -> str:
    """The report as markdown: what comes from the runs' files on one line each
    (:func:`one_line`), one table row per configuration."""
    metrics = sorted({one_line(g.metric) for g in groups}) or ["acc"]
    lower = sorted({one_line(g.metric) for g in groups if not g.higher_is_better})
    lines = [
        f"# Report of `{one_line(sweep_dir)}`",
        "",
        f"Test {', '.join(metrics)} as mean ± std over folds (accuracy in %"
        + "".join(f"; {m}: lower is better" for m in lower)
        + "). **fair**: each fold tested at its best validation epoch. **paper** (optimistic): "
        "the epoch with the best mean test-fold metric, as in the authors' code.",
        "",
        "| configuration | folds | epochs | fair | paper (optimistic) | paper epoch | "
        "val (fair) | wall time | code |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows(groups):
        m = r["metric"]
        lines.append(
            f"| {_cell(r['configuration'])} | {r['folds']} | {r['epochs']} | "
            f"{format_metric(r['fair_test_mean'], r['fair_test_std'], m)} | "
            f"{format_metric(r['paper_test_mean'], r['paper_test_std'], m)} | "
            f"{r['paper_best_epoch']} | {format_metric(r['fair_val_mean'], None, m)} | "
            f"{r['wall_time_s']:.0f} s | {_cell(r['code'])} |"
        )
    if failed:
        lines += ["", f"## Failed jobs ({len(failed)})", ""]
        lines += [f"- `{one_line(f.path)}`: {one_line(' '.join(f.error.split()))}" for f in failed]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@files.plain_text()  # labels come from the runs' files: no mathtext
def plot(groups: list[Group], path: Path) -> None:
    """The test metric of every configuration under both protocols, mean ± std over folds:
    horizontal bars, so that every label is printed whole, and the legend above the axes."""
    plt = _pyplot()
    data = rows(groups)
    labels = [one_line(g.label) for g in groups]
    y = np.arange(len(groups))[::-1]
    longest = max(len(label) for label in labels)
    fig, ax = plt.subplots(figsize=(6.0 + 0.065 * longest, 1.2 + 0.55 * len(groups)))
    height = 0.38
    metric = groups[0].metric if groups else "acc"
    scale = 100 if metric in PERCENT_METRICS else 1
    for offset, key, name in ((1, "fair", "fair"), (-1, "paper", "paper (optimistic)")):
        means = [scale * r[f"{key}_test_mean"] for r in data]
        stds = [scale * r[f"{key}_test_std"] for r in data]
        ax.barh(y + offset * height / 2, means, height, xerr=stds, capsize=3, label=name)
    ax.set_yticks(y, labels, fontsize=8)
    unit = " (%)" if scale == 100 else ""
    direction = "" if groups[0].higher_is_better else ", lower is better"
    ax.set_xlabel(f"test {metric}{unit}, mean ± std over folds{direction}")
    ax.grid(axis="x", alpha=0.3)
    # above the axes: it covers no bar
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    try:
        files.save_figure(fig, path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def read_history(run: RunResult) -> dict[str, np.ndarray]:
    """A run's ``history.csv`` as ``{metric: values over epochs}`` (empty when missing, or
    for a run read from an archive)."""
    path = None if run.path is None else Path(run.path) / HISTORY
    if path is None or not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {
        k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])
        for k in keys
    }


def _fold_curves(group: Group) -> tuple[list[str], np.ndarray] | None:
    """The metrics every fold's history has and their values, ``[folds, metrics, epochs]``
    (over the epochs that every fold reached); None without histories."""
    histories = [h for h in (read_history(r) for r in group.runs) if h]
    if not histories:
        return None
    keys = sorted(set.intersection(*(set(h) for h in histories)))
    length = min(len(next(iter(h.values()))) for h in histories)
    return keys, np.array([[h[k][:length] for k in keys] for h in histories])


def _over_folds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over folds (axis 0), NaN where no fold has a value (without numpy's
    warning about it: a metric that an epoch did not log is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def curve_spread(group: Group) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every metric of the group's histories as (mean, std over folds) per epoch."""
    found = _fold_curves(group)
    if found is None:
        return {}
    keys, values = found
    mean, std = _over_folds(values)
    return {k: (mean[i], std[i]) for i, k in enumerate(keys)}


#: what the learning-curve panels show: the selection metric (``{metric}``: the runs'), then
#: the task's loss (``ce``, ``bce``, ``l1``, ``mse``) and the pooling losses
CURVE_METRIC = ("train/{metric}", "val/{metric}", "heldout/{metric}")
CURVE_LOSS_PREFIXES = tuple(
    f"{stage}/{loss}" for loss in ("ce", "bce", "l1", "mse") for stage in ("train", "val")
) + ("train/link_loss", "train/entropy_loss")


#: the width (inches) of one configuration's pair of panels in ``curves.png``, its title's
#: font size (points) and the characters of title that fit on one line of that width
CURVE_PAIR_WIDTH, CURVE_TITLE_SIZE = 11.0, 9
CURVE_TITLE_CHARS = int(CURVE_PAIR_WIDTH * 72 / (0.62 * CURVE_TITLE_SIZE))


def drawn_series(curves: dict[str, tuple[np.ndarray, np.ndarray]], keys: Iterable[str],
                 losses: bool = False) -> list[str]:  # fmt: skip
    """The series of ``keys`` that ``curves.png`` draws: those the histories have, less the
    ones with no value (all NaN: a metric no epoch logged) and, among ``losses``, those that
    are zero at every epoch (a loss the model does not have, e.g. DiffPool-NoLP's link loss,
    DiffPool-Det's pooling losses), which would only crowd the legend."""
    shown = []
    for key in keys:
        if key not in curves:
            continue
        mean = curves[key][0]
        finite = mean[np.isfinite(mean)]
        if finite.size and not (losses and np.all(finite == 0)):
            shown.append(key)
    return shown


@files.plain_text()  # labels come from the runs' files: no mathtext
def plot_curves(groups: list[Group], path: Path) -> int:
    """Learning curves of every configuration: accuracies and every loss (per pooling
    level), mean over folds with a band of ± one std, epochs counted from 0 (markers where
    there are few); series without values or, for losses, all zero are left out
    (:func:`drawn_series`). Two panels per configuration under its title (wrapped to their
    width), two configurations per row beyond six. Returns how many configurations were
    drawn (0: no run has a history, nothing written)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    curves = [(g, c) for g, c in ((g, curve_spread(g)) for g in groups) if c]
    if not curves:
        return 0
    per_row = 1 if len(curves) <= 6 else 2
    nrows = -(-len(curves) // per_row)
    titles = []
    for group, _ in curves:
        folds = len(group.runs)
        title = f"{one_line(group.label)} ({folds} fold{'s' * (folds > 1)}, mean ± std)"
        titles.append(textwrap.fill(title, CURVE_TITLE_CHARS, break_on_hyphens=False))
    lines = max(t.count("\n") + 1 for t in titles)
    # constrained layout: every title keeps its room, whatever its length
    fig = plt.figure(
        figsize=(CURVE_PAIR_WIDTH * per_row, (2.8 + 0.2 * lines) * nrows), layout="constrained"
    )
    pairs = fig.subfigures(nrows, per_row, squeeze=False).ravel()
    for (group, c), title, pair in zip(curves, titles, pairs):
        acc_ax, loss_ax = pair.subplots(1, 2)
        pair.suptitle(title, fontsize=CURVE_TITLE_SIZE)
        percent = group.metric in PERCENT_METRICS
        shown = [k.format(metric=group.metric) for k in CURVE_METRIC]
        losses = [k for k in sorted(c) if k.startswith(CURVE_LOSS_PREFIXES)]
        for ax, keys, scale in (
            (acc_ax, drawn_series(c, shown), 100.0 if percent else 1.0),
            (loss_ax, drawn_series(c, losses, losses=True), 1.0),
        ):
            for key in keys:
                mean, std = c[key]
                epochs = np.arange(len(mean))
                marker = "o" if len(epochs) <= 30 else None
                (line,) = ax.plot(epochs, scale * mean, marker=marker, markersize=3, label=key)
                if len(group.runs) > 1:
                    ax.fill_between(epochs, scale * (mean - std), scale * (mean + std),
                                    color=line.get_color(), alpha=0.15, linewidth=0)  # fmt: skip
            if keys:
                ax.legend(fontsize=7, loc="best")
        acc_ax.set_ylabel(f"{group.metric} (%)" if percent else group.metric)
        loss_ax.set_ylabel("loss")
        if loss_ax.get_lines():
            loss_ax.set_yscale("log")
        for ax in (acc_ax, loss_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    try:
        files.save_figure(fig, path, dpi=90)
    finally:
        plt.close(fig)
    return len(curves)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and, with the ``viz`` extra, ``report.png`` and
    the learning curves ``curves.png`` (default: into ``sweep_dir``). Each is written whole,
    never through a symbolic link (:func:`diffpool.utils.files.write_atomically`); the
    labels of report.md and report.csv are on one line (:func:`one_line`).

    Returns:
        dict: the paths written, by kind.

    Raises:
        UnsafeDestinationError: one of them is a symbolic link (a ValueError; nothing is
            written).
    """
    groups, failed = collect(sweep_dir)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv"}
    plots = bool(groups) and not missing("viz")
    for path in [*paths.values()] + ([out / "report.png", out / "curves.png"] if plots else []):
        files.check_destination(path)
    files.write_atomically(paths["md"], markdown(groups, failed, sweep_dir))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, ROW_FIELDS)
    writer.writeheader()
    writer.writerows(
        {**r, **{k: one_line(r[k]) for k in ("configuration", "metric", "code")}}
        for r in rows(groups)
    )
    files.write_atomically(paths["csv"], text.getvalue())
    if plots:
        paths["png"] = out / "report.png"
        plot(groups, paths["png"])
        drawn = plot_curves(groups, out / "curves.png")
        if drawn:
            paths["curves"] = out / "curves.png"
        if drawn < len(groups):
            log.warning(
                "curves.png: %d of %d configurations have no history.csv (runs read from an "
                "archive): only their results are reported", len(groups) - drawn, len(groups)
            )  # fmt: skip
    return paths
