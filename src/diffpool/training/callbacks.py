"""Callbacks of the training runs."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

#: the logged metrics that :class:`EpochHistory` keeps
HISTORY_PREFIXES = ("train/", "val/", "heldout/")
#: the history's column of fitting time (seconds) up to the end of each epoch
ELAPSED = "time/elapsed_s"


class EpochHistory(Callback):
    """Keeps every epoch's epoch-level metrics (``train/*``, ``val/*``, ``heldout/*``) and
    ``time/elapsed_s``, the seconds of fitting up to the end of that epoch.

    The history is part of the checkpoint, so a resumed run continues it, its clock included:
    :attr:`resumed_elapsed_s` is the fitting time of the epochs it restored (an interrupted,
    unfinished epoch is not counted). With ``path`` it is also written as CSV after every
    epoch (global rank 0), for learning curves.

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
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(HISTORY_PREFIXES):
                row[key] = float(value)
        if self._fit_started is not None:
            row[ELAPSED] = self.resumed_elapsed_s + time.monotonic() - self._fit_started
        self.epochs = [r for r in self.epochs if r["epoch"] != row["epoch"]] + [row]
        if self.path is not None and trainer.is_global_zero:
            self.write(self.path)

    def write(self, path: Path) -> None:
        keys = sorted({k for row in self.epochs for k in row} - {"epoch"})
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", *keys], restval="")
            writer.writeheader()
            writer.writerows(self.epochs)
        tmp.replace(path)

    def curve(self, key: str) -> list[float]:
        """One metric over the epochs (NaN where an epoch did not log it)."""
        return [row.get(key, math.nan) for row in self.epochs]

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
