"""Training: the Lightning module and data module, the batch sampler and the run logic
(the ``train`` extra: ``pip install "diffpool[train]"``)."""

from diffpool.utils.extras import require

require("train", "diffpool.training")

# ruff: noqa: E402

from diffpool.training.callbacks import EpochHistory
from diffpool.training.datamodule import TUDataModule
from diffpool.training.module import GraphClassifier, NonFiniteLossError
from diffpool.training.results import FairResult, RunFailure, RunResult
from diffpool.training.run import RunDirectoryError, train
from diffpool.training.sampler import GraphBatchSampler

__all__ = [
    "EpochHistory",
    "FairResult",
    "GraphBatchSampler",
    "GraphClassifier",
    "NonFiniteLossError",
    "RunDirectoryError",
    "RunFailure",
    "RunResult",
    "TUDataModule",
    "train",
]
