"""curves.png: every configuration's title whole, no series that has nothing to show, plain
tick labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from diffpool.training.report import collect, drawn_series, plot_curves
from diffpool.training.results import FairResult, RunResult

pytest.importorskip("matplotlib", reason="needs the viz extra")

EPOCHS = 4
#: a setting whose name makes every configuration's label longer than its two panels
LONG = "a_setting_with_a_name_long_enough_to_run_past_its_two_panels_of_learning_curves"


def _job(sweep, variant: str, encoder: str, fold: int) -> None:
    """A finished job with a history: DiffPool-NoLP's link loss is zero at every epoch, and
    val/bce was never logged (all NaN)."""
    job = sweep / f"{variant}-{encoder}-{fold}"
    job.mkdir(parents=True)
    rows = []
    for epoch in range(EPOCHS):
        rows.append({
            "epoch": epoch, "train/acc": 0.5 + 0.1 * epoch, "val/acc": 0.4 + 0.1 * epoch,
            "heldout/acc": 0.4 + 0.1 * epoch, "train/ce": 2.0 / (epoch + 1), "val/bce": "",
            "train/link_loss_l0": 0.0 if variant == "nolp" else 0.5 / (epoch + 1),
            "train/entropy_loss_l0": 1.0 / (epoch + 1),
        })  # fmt: skip
    with open(job / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    model = {"variant": variant, "encoder": encoder, LONG: f"{variant}-{encoder}" * 4}
    config = {"data": {"name": "ENZYMES", "fold": fold}, "model": model}
    RunResult(dataset="ENZYMES", fold=fold, num_folds=10, model=variant, epochs=EPOCHS,
              fair=FairResult(best_epoch=3, val=0.7, test=0.7), test_curve=[0.4, 0.5, 0.6, 0.7],
              val_curve=[0.4, 0.5, 0.6, 0.7], wall_time_s=1.0, config=config).save(job)  # fmt: skip


def test_drawn_series_leave_out_all_nan_and_all_zero_losses():
    curves = {
        "train/acc": (np.array([0.0, 0.0]), np.zeros(2)),  # a metric at 0 is drawn
        "val/bce": (np.array([np.nan, np.nan]), np.zeros(2)),
        "train/link_loss_l0": (np.array([0.0, 0.0]), np.zeros(2)),
        "train/entropy_loss_l0": (np.array([0.0, np.nan, 0.5]), np.zeros(3)),
    }
    keys = ["train/acc", "val/bce", "absent"]
    assert drawn_series(curves, keys) == ["train/acc"]
    losses = ["train/link_loss_l0", "train/entropy_loss_l0", "val/bce"]
    assert drawn_series(curves, losses, losses=True) == ["train/entropy_loss_l0"]


@pytest.mark.parametrize("configs", [2, 8])  # one pair of panels per row; two per row
def test_curves_titles_are_whole_and_legends_list_what_is_drawn(tmp_path, monkeypatch, configs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep = tmp_path / "sweep"
    encoders = ["sage", "gcn", "gin", "gat"]
    for i in range(configs):
        for fold in (0, 1):
            _job(sweep, ("nolp", "diffpool")[i % 2], encoders[i // 2], fold)
    groups, _ = collect(sweep)
    seen = {}
    save = Figure.savefig

    def inspect(fig, *args, **kwargs):
        save(fig, *args, **kwargs)  # draws: the texts have their places
        renderer = FigureCanvasAgg(fig).get_renderer()
        page = fig.bbox
        titles = [t for sub in fig.subfigs for t in [sub._suptitle] if t is not None]
        seen["titles"] = [t.get_text() for t in titles]
        for title in titles:
            box = title.get_window_extent(renderer)
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, title
        seen["legends"] = [
            [t.get_text() for t in ax.get_legend().get_texts()]
            for ax in fig.get_axes()
            if ax.get_legend() is not None
        ]
        seen["lines"] = [line.get_label() for ax in fig.get_axes() for line in ax.get_lines()]
        seen["ticks"] = [t.get_text() for ax in fig.get_axes() for t in ax.get_yticklabels("both")]

    monkeypatch.setattr(Figure, "savefig", inspect)
    assert plot_curves(groups, tmp_path / "curves.png") == configs
    assert len(seen["titles"]) == configs and all(LONG in t for t in seen["titles"])
    listed = [label for legend in seen["legends"] for label in legend]
    assert "val/bce" not in listed and "val/bce" not in seen["lines"]
    # DiffPool's link loss is drawn, DiffPool-NoLP's (zero at every epoch) is not
    assert listed.count("train/link_loss_l0") == configs // 2
    assert listed.count("train/entropy_loss_l0") == configs
    # the log axes' labels are plain text, as every text of the figure (no "$10^{-1}$")
    assert any("e\u2212" in t for t in seen["ticks"]) and not any("$" in t for t in seen["ticks"])


@pytest.mark.parametrize(
    "content",
    ["fifo", "dangling", "epoch,train/acc\n0,abc\n", "epoch,train/acc\n0," + "9" * 200_000 + "\n"],
)
def test_a_history_that_cannot_be_read_is_left_out_with_a_warning(tmp_path, caplog, content):
    """A pipe is not waited on, a cell of text or a field past csv's limit is no crash: that
    fold's curves are left out, the warning names the file, the other folds are drawn."""
    import os

    from diffpool.training.report import curve_spread

    for fold in range(2):
        _job(tmp_path, "diffpool", "sage", fold)
    bad = tmp_path / "diffpool-sage-1" / "history.csv"
    bad.unlink()
    if content == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("needs pipes (POSIX)")
    if content == "fifo":
        os.mkfifo(bad)
    elif content == "dangling":
        bad.symlink_to(tmp_path / "gone.csv")
    else:
        bad.write_text(content)
    (group,) = collect(tmp_path)[0]
    spread = curve_spread(group)
    assert str(bad) in caplog.text
    np.testing.assert_allclose(spread["train/acc"][0], [0.5, 0.6, 0.7, 0.8])
    np.testing.assert_allclose(spread["train/acc"][1], 0.0, atol=1e-12)


def test_the_report_figure_draws_each_metric_on_its_own_axis_and_names_any_dataset(
    tmp_path, monkeypatch
):
    """Runs of several metrics: one panel each, in its own scale and name (the first
    metric's axis had held them all); a run of a dataset without ``data.name`` (``data=pyg``)
    is labelled with the dataset its results name."""
    from diffpool.training.report import group_runs, plot

    runs = []
    for fold, (metric, name) in enumerate([("acc", "ENZYMES"), ("acc", "ENZYMES"), ("ap", None)]):
        data = {"fold": fold, **({"name": name} if name else {"dataset": {"_target_": "x.My"}})}
        runs.append(RunResult(dataset=name or "MyDataset", fold=fold, num_folds=3, model="diffpool",
                              epochs=1, fair=FairResult(best_epoch=0, val=0.9, test=0.9),
                              test_curve=[0.9], val_curve=[0.9], wall_time_s=1.0, metric=metric,
                              config={"data": data, "model": {"variant": "diffpool"}}))  # fmt: skip
    groups = group_runs(runs)
    assert sorted(g.metric for g in groups) == ["acc", "ap"]
    import diffpool.training.report as report

    drawn = []
    monkeypatch.setattr(report.files, "save_figure", lambda fig, *a, **k: drawn.append(fig))
    plot(groups, tmp_path / "report.png")
    labels = [ax.get_xlabel() for ax in drawn[0].axes]
    assert labels == ["test acc (%), mean ± std over folds", "test ap, mean ± std over folds"]
    alone = group_runs(runs[2:])
    assert alone[0].label == "MyDataset / diffpool"


def test_a_fold_reported_twice_is_warned_about(caplog):
    from diffpool.training.report import group_runs

    run = RunResult(dataset="MUTAG", fold=0, num_folds=10, model="diffpool", epochs=1,
                    fair=FairResult(best_epoch=0, val=0.9, test=0.9), test_curve=[0.9],
                    val_curve=[0.9], wall_time_s=1.0,
                    config={"data": {"name": "MUTAG", "fold": 0}})  # fmt: skip
    with caplog.at_level("WARNING"):
        assert len(group_runs([run, run])[0].runs) == 2
    assert "holds fold 0 more than once" in caplog.text


def test_runs_on_a_datasets_own_split_are_grouped_over_seeds(caplog):
    """OGB's protocol: one split, mean ± std over seeds. Runs of ``data.split=dataset``
    differ only by seed: one group; k-fold runs of two seeds (two partitions) stay apart."""
    from diffpool.training.report import group_runs, markdown

    def run(seed, split, fold=0, test=0.7):
        return RunResult(dataset="ogbg-molhiv", fold=fold, num_folds=1, model="diffpool",
                         epochs=1, fair=FairResult(best_epoch=0, val=0.8, test=test),
                         test_curve=[test], val_curve=[0.8], wall_time_s=1.0, metric="rocauc",
                         config={"seed": seed, "module": {"seed": seed},
                                 "data": {"name": "ogbg-molhiv", "split": split, "seed": seed,
                                          "fold": fold}})  # fmt: skip

    own = group_runs([run(0, "dataset", test=0.7), run(1, "dataset", test=0.8)])
    assert len(own) == 1 and len(own[0].runs) == 2
    assert own[0].fair() == pytest.approx((0.75, 0.05))
    # the report counts them as seeds
    assert "| 2 seeds | 1 |" in markdown(own, [], "sweep")
    assert "| 2 | 1 |" in markdown(group_runs([run(0, "kfold", 0), run(0, "kfold", 1)]), [], "s")
    assert len(group_runs([run(0, "kfold"), run(1, "kfold")])) == 2
    with caplog.at_level("WARNING"):
        group_runs([run(1, "dataset"), run(1, "dataset"), run(0, "dataset")])
    assert "holds fold 0 of seed 1 more than once" in caplog.text


def test_a_fold_without_a_fair_test_value_is_left_out_of_the_mean(caplog):
    """A test fold of one class has no ROC-AUC (NaN): the fair mean is that of the other
    folds, as the paper protocol's, with a warning (it had blanked the whole cell)."""
    from diffpool.training.report import group_runs

    runs = [RunResult(dataset="MUTAG", fold=fold, num_folds=10, model="diffpool", epochs=1,
                      fair=FairResult(best_epoch=0, val=0.9, test=test), test_curve=[0.9],
                      val_curve=[0.9], wall_time_s=1.0, metric="rocauc",
                      config={"data": {"name": "MUTAG", "fold": fold}})
            for fold, test in enumerate([0.8, float("nan"), 0.6])]  # fmt: skip
    with caplog.at_level("WARNING"):
        (group,) = group_runs(runs)
    assert group.fair() == pytest.approx((0.7, 0.1))
    assert "folds [1] have no fair test value" in caplog.text
