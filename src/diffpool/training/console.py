"""What a training run prints: Lightning's messages that are not about the run are left out,
from the command line and from Python alike, and under ``diffpool-train`` Lightning's console
handlers give way to Hydra's logging, so that every line is printed once."""

from __future__ import annotations

import logging
import warnings

#: Lightning's logger of ``rank_zero_info`` messages
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
#: the loggers of Lightning's packages that print to the console themselves
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")
#: the beginnings of Lightning's messages that say nothing about the run
DROPPED = ("💡 Tip", "TPU available: False", "HPU available: False")
#: the FutureWarning that torch >= 2.10 raises in Lightning's ``_pytree`` helper, once per fit
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED)


_TIPS = _DropTips()


def drop_lightning_noise() -> None:
    """Leave out Lightning's tips to install its cloud products, the lines on accelerators
    this machine does not have, and torch's ``LeafSpec`` FutureWarning that Lightning
    triggers; idempotent, applied when :mod:`diffpool.training` is imported.

    The one text filter on Lightning's output: these are ``rank_zero_info`` messages that
    only the ``lightning.pytorch`` logger's level controls, which would hide the run's own
    information too (Lightning issue #21294 asks for a switch).
    """
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    if _TIPS not in logger.filters:
        logger.addFilter(_TIPS)
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)


#: the package's loggers whose information is a job's detail: in a sweep it goes where
#: :data:`~diffpool.training.callbacks.DETAIL` goes (each job's ``train.log``), their warnings
#: to the console as well
DETAIL_SOURCES = ("diffpool.training.datamodule", "diffpool.training.module")


class _ToDetail(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        from diffpool.training.callbacks import DETAIL

        logging.getLogger(DETAIL).handle(record)
        return False


_DETAIL = _ToDetail()


def quiet_lightning(sweep: bool = False) -> None:
    """:func:`drop_lightning_noise`, and Lightning's console handlers removed where the root
    logger has handlers (Hydra's); ``sweep``: Lightning's own information is left out too,
    and the data and model modules' goes to the job's detail (:data:`DETAIL_SOURCES`): a
    sweep's console shows one line per job. Idempotent."""
    drop_lightning_noise()
    if sweep:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for name in DETAIL_SOURCES:
        logger = logging.getLogger(name)
        if sweep and _DETAIL not in logger.filters:
            logger.addFilter(_DETAIL)
        elif not sweep:
            logger.removeFilter(_DETAIL)
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        lightning = logging.getLogger(name)
        for handler in list(lightning.handlers):
            if type(handler) is logging.StreamHandler:
                lightning.removeHandler(handler)
        lightning.propagate = True
