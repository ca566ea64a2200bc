"""What a training run prints: Lightning's own messages that are not about the run (its
advertising tips, a deprecation warning it triggers in torch) are filtered where they arise,
and its console handler gives way to the application's logging (Hydra's), so that every line
is printed once."""

from __future__ import annotations

import logging
import warnings

#: Lightning's logger of ``rank_zero_info`` messages
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


#: the loggers of Lightning's packages that print to the console themselves
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")

#: the beginnings of Lightning's messages that say nothing about the run
DROPPED = ("💡 Tip", "TPU available: False", "HPU available: False")


class _DropTips(logging.Filter):
    """Drops Lightning's advertising ("💡 Tip: ... try installing ...") and the lines on
    accelerators this machine does not have."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED)


_TIPS = _DropTips()


def quiet_lightning(sweep: bool = False) -> None:
    """Filter what is not about the run; idempotent. ``sweep``: a job of a sweep, whose
    console shows one line per job; Lightning's own information (accelerators, why fitting
    stopped) is then left out.

    * Lightning's tips to install its cloud products (two per run);
    * ``isinstance(treespec, LeafSpec) is deprecated``: a FutureWarning that torch >= 2.10
      raises in Lightning's ``_pytree`` helper, once per fit (Lightning's to fix);
    * Lightning's own console handlers (on ``lightning`` and ``lightning.pytorch``) when the
      root logger has handlers (Hydra's console and ``train.log``): the messages then go
      through those, instead of twice to the console.
    """
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    if _TIPS not in logger.filters:
        logger.addFilter(_TIPS)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    if sweep:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        lightning = logging.getLogger(name)
        for handler in list(lightning.handlers):
            if type(handler) is logging.StreamHandler:
                lightning.removeHandler(handler)
        lightning.propagate = True
