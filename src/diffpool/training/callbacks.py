"""Callbacks of the training runs."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import reprlib
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffpool.utils import files

#: the logged metrics that :class:`EpochHistory` keeps
HISTORY_PREFIXES = ("train/", "val/", "heldout/")
#: the history's column of fitting time (seconds) up to the end of each epoch
ELAPSED = "time/elapsed_s"
#: the metrics of :class:`EpochLog`'s line, in this order (those the run logs); ``{metric}``
#: is the task's selection metric (``acc``, ``rocauc``, ``mae``, ...)
EPOCH_LOG_METRICS = ("train/loss", "train/{metric}", "val/{metric}", "heldout/{metric}")

#: the metrics of a validation run (``heldout/``: the test fold, run with the validation)
VALIDATION_PREFIXES = ("val/", "heldout/")

log = logging.getLogger("diffpool.training")
#: where a sweep's jobs log their detail: diffpool-train's Hydra config routes it to each
#: job's train.log only
DETAIL = "diffpool.training.detail"


class _EpochMetrics(Callback):
    """Reads an epoch's logged metrics at its end; validation's only where validation ran in
    that epoch (``trainer.callback_metrics`` keeps the last validation's values, so an epoch
    that ``check_val_every_n_epoch`` skips would repeat them)."""

    _validated_epoch = -1

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def epoch_metrics(self, trainer: Trainer) -> dict[str, float]:
        validated = self._validated_epoch == trainer.current_epoch
        return {
            key: float(value)
            for key, value in sorted(trainer.callback_metrics.items())
            if key.startswith(HISTORY_PREFIXES)
            and (validated or not key.startswith(VALIDATION_PREFIXES))
        }


class EpochHistory(_EpochMetrics):
    """Keeps every epoch's epoch-level metrics (``train/*``, ``val/*``, ``heldout/*``) and
    ``time/elapsed_s`` (seconds of fitting up to the end of the epoch); with ``path``, writes
    them as CSV after every epoch (global rank 0, atomically, never through a link).

    The history is part of the checkpoint, so a resumed run continues it, its clock included
    (:attr:`resumed_elapsed_s`). Lightning's ``CSVLogger`` does not: a resumed run starts a
    new ``version_<n>/`` file, and ``logger=none`` has none.

    Args:
        path (str, optional): CSV file to (re)write after every epoch. (default: :obj:`None`)
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.epochs: list[dict[str, float]] = []
        self.resumed_elapsed_s = 0.0
        self._fit_started: float | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning restores a checkpoint's callback state before this hook
        self.resumed_elapsed_s = self.epochs[-1].get(ELAPSED, 0.0) if self.epochs else 0.0
        self._fit_started = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        row: dict[str, float] = {"epoch": trainer.current_epoch, **self.epoch_metrics(trainer)}
        if self._fit_started is not None:
            row[ELAPSED] = self.resumed_elapsed_s + time.monotonic() - self._fit_started
        self.epochs = [r for r in self.epochs if r["epoch"] != row["epoch"]] + [row]
        if self.path is not None and trainer.is_global_zero:
            self.write(self.path)

    def write(self, path: Path) -> None:
        """Write the history as CSV to ``path`` (:func:`diffpool.utils.files.write_atomically`)."""
        keys = sorted({k for row in self.epochs for k in row} - {"epoch"})
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, ["epoch", *keys], restval="")
        writer.writeheader()
        writer.writerows(self.epochs)
        files.write_atomically(path, text.getvalue())

    def curve(self, key: str) -> list[float]:
        """One metric over the epochs (NaN where an epoch did not log it)."""
        return [row.get(key, math.nan) for row in self.epochs]

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a checkpoint's epochs. Its keys become CSV columns, so entries that are not
        a metric name with a number are dropped, with a warning.

        Raises:
            ValueError: ``epochs`` is not a list of rows with an integer ``epoch``.
        """
        epochs, dropped = state_dict.get("epochs"), set()
        if not isinstance(epochs, list) or not all(_has_epoch(r) for r in epochs):
            raise ValueError("the checkpoint's EpochHistory state is not a list of epochs")
        self.epochs = []
        for row in epochs:
            kept = {k: float(v) for k, v in row.items() if _is_metric(k) and _is_number(v)}
            dropped |= {reprlib.repr(k) for k in row if k != "epoch" and k not in kept}
            if kept or len(row) == 1:  # not a row of dropped entries only
                self.epochs.append({"epoch": int(row["epoch"]), **kept})
        if dropped:
            log.warning(
                "the checkpoint's EpochHistory state names what is not a metric (dropped): %s",
                ", ".join(sorted(dropped)),
            )


#: what a metric name of the history is made of
_METRIC_NAME = re.compile(r"[A-Za-z0-9_./-]+")


def _is_metric(key: Any) -> bool:
    return (
        isinstance(key, str)
        and (key == ELAPSED or key.startswith(HISTORY_PREFIXES))
        and _METRIC_NAME.fullmatch(key) is not None
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_epoch(row: Any) -> bool:
    epoch = row.get("epoch") if isinstance(row, dict) else None
    return _is_number(epoch) and math.isfinite(epoch) and epoch == int(epoch)


class EpochLog(_EpochMetrics):
    """One line per finished epoch on the ``diffpool.training`` logger, instead of a progress
    bar, whole with parallel jobs; epochs counted from 0 as Lightning counts them::

        [data.fold=3,model=nolp] epoch 12/99  train/loss 1.2345  train/acc 0.4120 ...  (1.3 s)

    Args:
        name (str, optional): Printed before every line (a sweep's job); a named job logs to
            the ``diffpool.training.detail`` logger (its ``train.log`` under
            ``diffpool-train``). (default: :obj:`""`)
    """

    def __init__(self, name: str = ""):
        self.name = name
        self._logger = logging.getLogger(DETAIL) if name else log
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = self.epoch_metrics(trainer)
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else None
        width = len(str(last)) if last is not None else 1
        total = f"/{last}" if last is not None else ""
        parts = [f"epoch {trainer.current_epoch:>{width}}{total}"]
        task = getattr(pl_module, "task", None)
        keys = [k.format(metric=getattr(task, "metric", "acc")) for k in EPOCH_LOG_METRICS]
        parts += [f"{key} {float(metrics[key]):.4f}" for key in keys if key in metrics]
        if self._started is not None:
            parts.append(f"({time.monotonic() - self._started:.1f} s)")
        self._logger.info("%s%s", f"[{self.name}] " if self.name else "", "  ".join(parts))


class RunConfig(Callback):
    """Stores the run's config (``comparable_config``, plain data) in every checkpoint, under
    :attr:`KEY`: ``resume=true`` continues a checkpoint only with the config that wrote it."""

    KEY = "diffpool_run_config"

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[self.KEY] = self.config


class RelocateCheckpoints(Callback):
    """Lets a run directory be moved or copied and still be resumed exactly.

    A checkpoint stores its :class:`~lightning.pytorch.callbacks.ModelCheckpoint` states with
    absolute paths; where the directory changed, Lightning forgets the best score, and the
    first epoch after resuming would count as the best. This rewrites the paths to the same
    files under the new directory before the states are loaded. The paths are data: one that
    names anything but a ``*.ckpt`` directly in the callback's directory is dropped (Lightning
    removes the files a state names).
    """

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.callbacks:
            if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
                continue
            state = states.get(callback.state_key)
            if state:
                states[callback.state_key] = _relocated(state, str(callback.dirpath))


def _relocated(state: dict[str, Any], dirpath: str) -> dict[str, Any]:
    """A ModelCheckpoint state whose paths name the same ``*.ckpt`` files in ``dirpath``."""
    home = os.path.normpath(dirpath)
    old = os.path.normpath(str(state.get("dirpath") or home))

    def move(path: Any) -> str:
        if not isinstance(path, str) or not path.endswith(".ckpt"):
            return ""
        folder, name = os.path.split(os.path.normpath(path))
        return os.path.join(home, name) if folder in (old, home) else ""

    moved = dict(state, dirpath=dirpath)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in moved:
            moved[key] = move(moved[key])
    if isinstance(moved.get("best_k_models"), dict):
        moved["best_k_models"] = {move(k): v for k, v in moved["best_k_models"].items() if move(k)}
    return moved


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, each checkpoint written whole or not at all: to a temporary
    file beside it, renamed over it once on disk (Lightning's move from the system's
    temporary directory is a copy across disks, and a full disk leaves half a checkpoint). A
    path that is a symbolic link is refused (:func:`diffpool.utils.files.save_atomically`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.save_atomically(checkpoint, path)


def write_checkpoints_atomically(trainer: Trainer) -> None:
    """Let ``trainer`` save with :class:`AtomicCheckpointIO` where it has Lightning's default IO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
