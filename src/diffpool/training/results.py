"""What a run leaves behind: :class:`RunResult` (``results.json``) and :class:`RunFailure`
(``failed.json``), the one reader and writer of both.

A finished run's result holds the curves of both evaluation protocols, so that any report can
be computed from it without the checkpoints:

* **fair**: the epoch with the best validation metric (``fair.best_epoch``), its checkpoint
  tested on the held-out fold (``fair.test``);
* **paper** (optimistic, the authors' code): the held-out fold's metric after every epoch
  (``test_curve``); a report averages these curves over the folds and picks the best epoch of
  the mean, i.e. the epoch is selected on the test folds.

``schema`` is the version of the layout: another version is a named error.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from diffpool.utils import files

#: the file names inside a run directory
RESULTS = "results.json"
FAILED = "failed.json"
HISTORY = "history.csv"
LOCK = "run.lock"

#: the layout written by this version
SCHEMA_VERSION = 2

#: config entries (dotted; a group's name: all of it) that say where the data lives, what the
#: console shows or where the run is logged: a run is the same whatever they are (one
#: restored on another machine, or rerun with another logger, is skipped as finished, and a
#: report puts it with the others). GraphBatchSampler splits the batches whatever Lightning's
#: ``use_distributed_sampler``.
NOT_IDENTITY = ("data.root", "logger", "trainer.enable_progress_bar",
                "trainer.enable_model_summary", "trainer.use_distributed_sampler")  # fmt: skip


def write_json(path: Path, payload: dict, overwrite: bool = True) -> None:
    """Write ``payload`` to ``path`` whole, never through a symbolic link (nor over an existing
    file, with ``overwrite=False``: :func:`diffpool.utils.files.write_atomically`)."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    files.write_atomically(path, text, overwrite=overwrite)


#: the largest results file read (a run's curves and config take kilobytes)
MAX_JSON_BYTES = 16 * 2**20
#: what a metric name or an OGB score's key is made of: they are written into log lines
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")


def read_json(file: Path, cls: type) -> Any:
    """The dataclass ``cls`` from the JSON file ``file`` (with ``cls.from_json``), a regular
    file of at most :data:`MAX_JSON_BYTES` (a pipe or a device is refused, not read).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``file`` is not a regular file of that size, not JSON, or not ``cls``'s
            layout (named in the message).
    """
    try:
        text = files.read_regular(file, MAX_JSON_BYTES, "results file").decode("utf-8")
        return cls.from_json(json.loads(text), path=file.parent)
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not UTF-8 text ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err})") from None
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None


def _check_layout(cls: type, payload: Any) -> None:
    """Raise a ValueError that says what in ``payload`` does not fit the dataclass ``cls``."""
    problems = _layout_problems(cls, payload)
    if problems:
        raise ValueError("; ".join(problems))


def _layout_problems(cls: type, payload: Any, prefix: str = "") -> list[str]:
    """What in ``payload`` does not fit the fields of the dataclass ``cls``: keys without a
    default that are missing, values of the wrong type (``prefix``: where ``payload`` is)."""
    if not isinstance(payload, dict):
        where = prefix[:-1] or "the top level"
        return [f"{where} must be a JSON object, got {reprlib.repr(payload)}"]
    hints, missing, wrong = typing.get_type_hints(cls), [], []
    for f in fields(cls):
        name, hint = prefix + f.name, hints[f.name]
        if f.name == "path":
            continue
        if f.name not in payload:
            if f.default is MISSING and f.default_factory is MISSING:
                missing.append(name)
        elif is_dataclass(hint):
            wrong += _layout_problems(hint, payload[f.name], name + ".")
        elif not _fits(payload[f.name], hint):
            wrong.append(f"{name} must be {_type_name(hint)}, got {reprlib.repr(payload[f.name])}")
    return ([f"missing {', '.join(missing)}"] if missing else []) + wrong


def _from_fields(cls: type, payload: dict[str, Any], path: str | Path | None):
    """``cls`` from the keys of ``payload`` that are its fields (others are ignored)."""
    known = {f.name for f in fields(cls)} - {"path"}
    kept = {k: v for k, v in payload.items() if k in known}
    return cls(path=None if path is None else Path(path), **kept)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value is of the type ``hint`` (a number is a float, a bool no int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint in (int, float):
        numbers = (int,) if hint is int else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """A type as the dataclass writes it: ``int``, ``str | None``, ``list[float]``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def best_epoch(curve: list[float], higher_is_better: bool = True) -> int:
    """The first epoch (from 0) of the best value of ``curve``, NaN left out (what
    ``ModelCheckpoint`` keeps, ``mode="max"`` / ``"min"``); -1 if it has none."""
    sign = 1.0 if higher_is_better else -1.0
    finite = [(sign * v, -i) for i, v in enumerate(curve) if not math.isnan(v)]
    return -max(finite)[1] if finite else -1


@dataclass
class FairResult:
    """The fair protocol of one run: model selection on the validation set."""

    #: the epoch (from 0) of the best validation metric; -1 without a validation set
    best_epoch: int = -1
    #: the validation metric at ``best_epoch``
    val: float | None = None
    #: the held-out fold's metric of the checkpoint of ``best_epoch``
    test: float | None = None
    #: that checkpoint
    checkpoint: str | None = None


@dataclass
class RunResult:
    """The result of one finished ``diffpool-train`` run (one model on one fold)."""

    dataset: str
    fold: int
    num_folds: int
    model: str | None
    epochs: int
    fair: FairResult
    #: the held-out fold's metric after every epoch (the paper protocol)
    test_curve: list[float]
    #: the validation metric after every epoch (NaN without a validation set)
    val_curve: list[float]
    wall_time_s: float
    #: the resolved config, without the keys that say how to run (see ``comparable_config``)
    config: dict[str, Any]
    #: the code, libraries and threads the run started with (:mod:`diffpool.utils.provenance`)
    provenance: dict[str, Any] | None = None
    #: the metric of both protocols and whether higher is better
    metric: str = "acc"
    higher_is_better: bool = True
    #: the task (``multiclass``, ``binary``, ``multilabel``, ``regression``)
    task: str = "multiclass"
    #: OGB's evaluator scores of the fair protocol's test checkpoint (OGB datasets only)
    ogb: dict[str, float] | None = None
    status: str = "finished"
    schema: int = SCHEMA_VERSION
    #: the run directory it was read from (not stored)
    path: Path | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` layout."""
        payload = asdict(self)
        payload.pop("path")
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any], path: str | Path | None = None) -> RunResult:
        """Read the layout; ``path``: the run directory, where known.

        Raises:
            ValueError: ``payload`` is not that layout (missing keys, values of the wrong
                type, a newer schema).
        """
        _check_layout(cls, payload)
        if payload.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(
                f"results of schema {payload['schema']} are not those of this diffpool "
                f"(schema {SCHEMA_VERSION}): use the diffpool version that wrote them"
            )
        names = [("metric", payload.get("metric", "acc"))]
        names += [("a key of ogb", key) for key in payload.get("ogb") or {}]
        for what, name in names:  # written into log lines: no line breaks, no escapes
            if not _NAME.fullmatch(name):
                raise ValueError(f"{what} must be a metric name, got {reprlib.repr(name)}")
        payload = dict(payload, fair=FairResult(**payload["fair"]))
        return _from_fields(cls, payload, path)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """The result of the run in ``run_dir`` (its ``results.json``).

        Raises:
            FileNotFoundError: no ``results.json``.
            ValueError: a ``results.json`` that is not JSON or not this layout (the message
                names the file and what is wrong).
        """
        run_dir = Path(run_dir)
        file = run_dir / RESULTS
        if not file.exists():
            raise FileNotFoundError(
                f"{file} not found: is {run_dir} a finished diffpool-train run?"
            )
        return read_json(file, cls)

    def save(self, run_dir: str | Path) -> Path:
        """Write ``results.json`` into ``run_dir`` (atomically); returns its path."""
        file = Path(run_dir) / RESULTS
        write_json(file, self.to_json())
        return file

    def lookup(self, dotted: str) -> Any:
        """The entry at a dotted path of :meth:`to_json` (``"fair.val"``): what
        ``diffpool-train`` returns to Hydra's sweepers (``optimized_metric``).

        Raises:
            KeyError: ``results.json`` has no such entry (naming the entries it has).
        """
        value: Any = self.to_json()
        for depth, key in enumerate(dotted.split(".")):
            if not isinstance(value, dict) or key not in value:
                where = ".".join(dotted.split(".")[:depth]) or "results.json"
                have = ", ".join(value) if isinstance(value, dict) else "no entries"
                raise KeyError(f"results.json has no entry {dotted!r} ({where} has {have})")
            value = value[key]
        return value

    @property
    def has_validation(self) -> bool:
        """Whether the run had a validation set (and so a fair result)."""
        return self.fair.test is not None

    def summary(self, short: bool = False) -> list[str]:
        """One line per protocol, as ``diffpool-train`` prints them at the end of a run
        (epochs counted from 0, as Lightning counts them: ``86/99`` is epoch 86 of 0 to 99)::

            fair:  test/acc 0.6167 (the best val/acc 0.6000, epoch 86/99)
            paper: heldout/acc 0.6500 at its best epoch 90/99 (a report takes ...)

        ``short``: without the explanation in brackets (a sweep's one line per job).
        """
        name, lines = self.metric, []
        if self.has_validation:
            lines.append(
                f"fair:  test/{name} {self.fair.test:.4f} (the best val/{name} "
                f"{self.fair.val:.4f}, epoch {self.fair.best_epoch}/{self.epochs - 1})"
            )
            for key, value in (self.ogb or {}).items():
                lines.append(f"fair:  OGB evaluator's test {key} {value:.4f}")
        elif any(not math.isnan(v) for v in self.val_curve):
            lines.append("fair:  no checkpoint of the best validation epoch, no fair result")
        else:
            lines.append("fair:  no validation value (no validation set, data.val_ratio=0, "
                         "or a ROC-AUC of one class), no fair result")  # fmt: skip
        epoch = best_epoch(self.test_curve, self.higher_is_better)
        if epoch >= 0:
            lines.append(
                f"paper: heldout/{name} {self.test_curve[epoch]:.4f} at its best epoch "
                f"{epoch}/{self.epochs - 1}"
                + ("" if short else " (a report takes the best epoch of the mean over folds)")
            )
        return lines


@dataclass
class RunFailure:
    """What a failed run leaves (``failed.json``): the error, and what ran."""

    error: str
    traceback: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    status: str = "failed"
    path: Path | None = field(default=None, compare=False, repr=False)

    def save(self, run_dir: str | Path) -> Path:
        file = Path(run_dir) / FAILED
        payload = asdict(self)
        payload.pop("path")
        write_json(file, payload)
        return file

    @classmethod
    def from_json(cls, payload: dict[str, Any], path: str | Path | None = None) -> RunFailure:
        """Read the layout; raises a ValueError that says what is wrong where it is not."""
        _check_layout(cls, payload)
        return _from_fields(cls, payload, path)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunFailure:
        """The failure of the run in ``run_dir`` (its ``failed.json``; errors as
        :meth:`RunResult.load`)."""
        return read_json(Path(run_dir) / FAILED, cls)
