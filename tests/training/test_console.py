"""What a run prints: in a sweep, the data and model modules' information is the job's detail."""

import logging

import pytest

from diffpool.training.callbacks import DETAIL
from diffpool.training.console import DETAIL_SOURCES, quiet_lightning


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def handlers():
    """A handler on the detail logger (a job's train.log, not propagated, as diffpool-train's
    Hydra config sets it) and one on the root (the console)."""
    detail, console = _Kept(), _Kept()
    logging.getLogger(DETAIL).addHandler(detail)
    logging.getLogger(DETAIL).propagate = False
    logging.getLogger().addHandler(console)
    levels = {name: logging.getLogger(name).level for name in ("", *DETAIL_SOURCES)}
    for name in levels:
        logging.getLogger(name).setLevel(logging.INFO)
    yield detail, console
    logging.getLogger(DETAIL).removeHandler(detail)
    logging.getLogger(DETAIL).propagate = True
    logging.getLogger().removeHandler(console)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    quiet_lightning(sweep=False)


def test_a_sweeps_jobs_log_the_data_and_model_lines_to_their_own_log(handlers):
    detail, console = handlers
    data = logging.getLogger("diffpool.training.datamodule")
    quiet_lightning(sweep=True)
    quiet_lightning(sweep=True)  # idempotent: each line once
    data.info("MUTAG: multiclass task")
    data.warning("a warning")
    assert detail.messages == ["MUTAG: multiclass task"]
    assert console.messages == ["a warning"]  # warnings still reach the console
    quiet_lightning(sweep=False)  # a single run: the console has it
    data.info("ENZYMES: multiclass task")
    assert console.messages[-1] == "ENZYMES: multiclass task"
    assert detail.messages == ["MUTAG: multiclass task"]
