"""What a training run prints: Lightning's own messages that are not about the run (its
advertising tips, the lines on accelerators this machine does not have, a deprecation warning
it triggers in torch) are left out, from the command line and from Python alike, and under
``diffpool-train`` its console handler gives way to the application's logging (Hydra's), so
that every line is printed once."""

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
    """Drops Lightning's advertising ("💡 Tip: ... try installing ...") and the lines on
    accelerators this machine does not have."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED)


_TIPS = _DropTips()


def drop_lightning_noise() -> None:
    """Leave out what Lightning prints that is not about the run; idempotent. Applied when
    :mod:`diffpool.training` is imported, so that a ``Trainer.fit`` from Python is as quiet as
    ``diffpool-train``.

    This is the one place that filters Lightning's output by its text, because Lightning has
    no switch for these messages: its tips to install its cloud products (``litlogger``,
    ``litmodels``, two per fit) and the accelerator lines are ``rank_zero_info`` messages on
    :data:`RANK_ZERO_LOGGER` that only the level of the ``lightning.pytorch`` logger controls
    (documented, but it would hide the run's own information too; Lightning issue #21294 asks
    for a switch), and the ``LeafSpec`` FutureWarning is torch's deprecation of a class that
    Lightning's ``_pytree`` helper still builds (Lightning's to fix).
    """
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    if _TIPS not in logger.filters:
        logger.addFilter(_TIPS)
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)


def quiet_lightning(sweep: bool = False) -> None:
    """What ``diffpool-train`` adds to :func:`drop_lightning_noise` for each job; idempotent.
    ``sweep``: a job of a sweep, whose console shows one line per job; Lightning's own
    information (accelerators, why fitting stopped) is then left out.

    Lightning's own console handlers (on ``lightning`` and ``lightning.pytorch``) give way
    when the root logger has handlers (Hydra's console and ``train.log``): the messages then
    go through those, instead of twice to the console.
    """
    drop_lightning_noise()
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
