"""Training: the Lightning module and data module, the batch sampler and the run logic
(the ``train`` extra: ``pip install ".[train]"`` in a clone of the repository)."""

from diffpool.utils.extras import require

require("train", "diffpool.training")

# ruff: noqa: E402

from diffpool.training.callbacks import EpochHistory
from diffpool.training.console import drop_lightning_noise
from diffpool.training.datamodule import GraphDataModule, TUDataModule
from diffpool.training.module import GraphClassifier, NonFiniteLossError
from diffpool.training.results import FairResult, RunFailure, RunResult
from diffpool.training.run import RunDirectoryError, train
from diffpool.training.sampler import GraphBatchSampler
from diffpool.training.tasks import Task

# Lightning's tips and a warning it triggers in torch are left out of every fit, from Python
# as from diffpool-train: the one text filter, see drop_lightning_noise
drop_lightning_noise()

__all__ = [
    "EpochHistory",
    "FairResult",
    "GraphBatchSampler",
    "GraphDataModule",
    "GraphClassifier",
    "NonFiniteLossError",
    "RunDirectoryError",
    "RunFailure",
    "RunResult",
    "TUDataModule",
    "Task",
    "train",
]
