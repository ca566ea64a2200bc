"""Callbacks of the training runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

#: the logged metrics that :class:`EpochHistory` keeps
HISTORY_PREFIXES = ("train/", "val/", "heldout/")


class EpochHistory(Callback):
    """Keeps every epoch's epoch-level metrics (``train/*``, ``val/*``, ``heldout/*``).

    The history is part of the checkpoint, so a resumed run continues it; with ``path`` it is
    also written as CSV after every epoch (global rank 0), for learning curves.

    Args:
        path (str, optional): CSV file to (re)write after every epoch. (default: :obj:`None`)
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.startswith(HISTORY_PREFIXES):
                row[key] = float(value)
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
