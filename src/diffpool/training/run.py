"""One training run from a composed config: what ``diffpool-train`` does for every job.

A run directory holds ``results.json`` (when the run finished), ``history.csv`` (every
epoch's metrics), ``checkpoints/`` (``last.ckpt`` after every epoch and the best one by
validation accuracy; each written whole or not at all), ``logs/`` and, under
``diffpool-train``, ``.hydra/`` (the job's config, as Hydra writes it). Nothing in it is
replaced silently:

* a run holds a lock on its directory (``run.lock``, removed when the run ends): a second run
  started there meanwhile is refused with :class:`RunDirectoryError`;
* a finished run with the same config is skipped (its results are returned), so rerunning a
  sweep only runs the jobs that did not finish;
* a finished run with another config, or an unfinished one, stops with an error that says
  what to do: ``resume=true`` continues from ``checkpoints/last.ckpt``, ``overwrite=true``
  moves the earlier files to ``replaced-<time>/`` and starts again.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import pickle
import reprlib
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from filelock import Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from diffpool.models.variants import data_transform
from diffpool.training.callbacks import (
    DETAIL,
    EpochHistory,
    EpochLog,
    RelocateCheckpoints,
    RunConfig,
    write_checkpoints_atomically,
)
from diffpool.training.console import quiet_lightning
from diffpool.training.datamodule import READ_BY_SPLIT, followed_by, unread_by_split
from diffpool.training.results import (
    FAILED,
    HISTORY,
    LOCK,
    NOT_IDENTITY,
    RESULTS,
    FairResult,
    RunFailure,
    RunResult,
    best_epoch,
)
from diffpool.utils import files, targets
from diffpool.utils.locks import RemovableLock
from diffpool.utils.provenance import provenance

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
#: where a job's config is written, as Hydra does (:func:`save_hydra_config`)
HYDRA_SUBDIR = ".hydra"

#: config keys that say how to run, not what: a finished run is the same whatever they are
RUN_CONTROL_KEYS = (
    "resume", "overwrite", "output_dir", "threads", "train", "ckpt_path", "trust"
)  # fmt: skip

#: what ``train=false`` writes
EVAL = "eval.json"

#: trainer settings that make a run a debugging run: it writes no ``results.json``
DEBUG_TRAINER_KEYS = (
    "fast_dev_run",
    "overfit_batches",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
)


class RunDirectoryError(RuntimeError):
    """The run directory holds an earlier run that this one would overwrite."""


def _launcher_rank() -> int:
    """The process's rank as set by Lightning's DDP launcher (0 before the launch)."""
    return int(os.environ.get("NODE_RANK", 0)) * 1000 + int(os.environ.get("LOCAL_RANK", 0))


def comparable_config(cfg: DictConfig | dict) -> dict:
    """The resolved config without the run-control keys, ``output_dir`` written
    ``<output_dir>``: the same config run in two directories compares equal."""
    if isinstance(cfg, DictConfig):
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.output_dir = "<output_dir>"
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in cfg.items() if k not in RUN_CONTROL_KEYS}


#: a callback's ``monitor`` / ``mode`` that watches the task's selection metric on the
#: validation set (``val/acc``, ``val/mae``, ...)
AUTO = "auto"


def _identity(config: dict) -> dict:
    """A comparable config without :data:`~diffpool.training.results.NOT_IDENTITY`."""
    config = copy.deepcopy(config)
    for dotted in NOT_IDENTITY:
        *groups, key = dotted.split(".")
        node = config
        for group in groups:
            node = node.get(group) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return config


def same_run(earlier: dict, cfg: DictConfig) -> bool:
    """Whether a finished run's stored config is ``cfg``, up to what defines no run
    (:data:`~diffpool.training.results.NOT_IDENTITY`)."""
    return _identity(earlier) == _identity(comparable_config(cfg))


#: what ``resume=true`` may change (prefixes of dotted keys): a run continued to more epochs
#: ends as one run so long
RESUME_MAY_CHANGE = ("trainer.max_epochs", "trainer.max_time")
#: the callbacks (``_target_`` endings) whose settings ``resume=true`` may not change
RESUME_KEEPS = ("ModelCheckpoint", "EarlyStopping")


def _may_change(key: str, earlier: dict, now: dict) -> bool:
    """Whether ``resume=true`` may change the config entry ``key``: the epoch budget, and
    the callbacks other than checkpoints and early stopping (a checkpoint's other monitor or
    period would drop its restored best, which the fair protocol tests; an EarlyStopping
    restores its patience, count and best from the checkpoint over the new settings)."""
    if key.startswith(RESUME_MAY_CHANGE):
        return True
    setting = key.removeprefix("data.")
    if key.startswith("data.") and setting in READ_BY_SPLIT:  # a run of before these were
        # errors may store them: resume may give them again as its split reads them
        data = earlier.get("data") if isinstance(earlier.get("data"), dict) else {}
        return setting in unread_by_split(data)
    group, _, rest = key.partition(".")
    if group != "callbacks" or not rest:
        return False
    name = rest.partition(".")[0]
    kinds = [str(((c.get("callbacks") or {}).get(name) or {}).get("_target_", ""))
             for c in (earlier, now)]  # fmt: skip
    return not any(kind.endswith(RESUME_KEEPS) for kind in kinds)


def _differing(a, b, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [k for key in keys for k in _differing(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix[:-1]]


def _not_resumable(earlier: dict, cfg: DictConfig) -> list[str]:
    """The dotted keys in which ``cfg`` differs from a run's stored config and that
    ``resume=true`` may not change (:func:`_may_change`)."""
    now = comparable_config(cfg)
    return [key for key in _differing(_identity(earlier), _identity(now))
            if not _may_change(key, earlier, now)]  # fmt: skip


def _check_resumed(out: Path, cfg: DictConfig) -> None:
    """``resume=true`` continues ``checkpoints/last.ckpt`` only with the config that wrote it
    (:class:`~diffpool.training.callbacks.RunConfig`): another fold or learning rate on top of
    its weights would be a run that never was (a fold's test graphs trained on)."""
    last = out / CHECKPOINTS / "last.ckpt"
    entries = _last_entries(out, RunConfig.KEY, "epoch")
    if entries is None:  # not a checkpoint: _train names it
        return
    earlier, epoch = entries
    budget = (cfg.get("trainer") or {}).get("max_epochs")
    if isinstance(epoch, int) and isinstance(budget, int) and 0 <= budget <= epoch:
        # Lightning would train no more and end the run with epochs 0 to `epoch`
        raise RunDirectoryError(
            f"{last} was written after epoch {epoch} (epochs counted from 0): "
            f"trainer.max_epochs={budget} would end the run with {epoch + 1} epochs; pass "
            f"trainer.max_epochs={epoch + 1} or more to continue it, or overwrite=true to start "
            "again (the earlier files are moved to replaced-<time>/)"
        )
    if not isinstance(earlier, dict):
        log.warning(
            "%s stores no run config (written before resume checked it): whether it was "
            "trained with these settings cannot be checked",
            last,
        )
        return
    differ = _not_resumable(earlier, cfg)
    if differ:
        raise RunDirectoryError(
            f"{last} was written by a run with another config ({', '.join(differ[:5])} "
            "differ): resume=true continues a run with its own config only; give the run's "
            "settings again, or pass overwrite=true to start again (the earlier files are "
            "moved to replaced-<time>/)"
        )


#: what diffpool-predict and diffpool-viz write into a run directory by default (from its
#: checkpoints: they go with them)
DERIVED = ("predictions-*", "pooling-*.png")


def _move_aside(out: Path, names: Sequence[str] | None = None) -> Path:
    """Move the earlier run's files (``names``: all of them) to ``replaced-<time>/``, with
    what diffpool-predict and diffpool-viz made of its checkpoints."""
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    target = out / f"replaced-{stamp}"
    while True:  # a second move within the same second gets a folder of its own
        try:
            target.mkdir()
            break
        except FileExistsError:
            n += 1
            target = out / f"replaced-{stamp}-{n}"
    everything = names is None
    if everything:
        names = [RESULTS, FAILED, HISTORY, CHECKPOINTS, "logs", HYDRA_SUBDIR]
    names = [*names, *sorted(p.name for pattern in DERIVED for p in out.glob(pattern))]
    for name in names:
        if (out / name).exists():
            shutil.move(str(out / name), str(target / name))
    log_file = out / "train.log"  # Hydra's, open and appended to: copied, then emptied
    # where it is no link: a hard link's other names (a snapshot of the folder made with
    # cp -al or rsync --link-dest) would be emptied too
    linked = log_file.is_symlink() or (log_file.is_file() and log_file.stat().st_nlink > 1)
    if everything and log_file.is_file() and not linked:
        shutil.copyfile(log_file, target / "train.log")
        with open(log_file, "r+b") as f:
            f.truncate(0)
    return target


def _stopped_early(earlier: RunResult, cfg: DictConfig) -> bool:
    """Whether a finished run ended before its ``trainer.max_epochs`` and ``cfg`` gives it
    no other ``trainer.max_time``: stopped by early stopping or by the time it still has, it
    would stop again, an epoch later than a straight run (Lightning does not restore the
    stop)."""
    before = (earlier.config or {}).get("trainer") or {}
    budget = before.get("max_epochs")
    now = comparable_config(cfg).get("trainer") or {}
    return (
        isinstance(budget, int)
        and 0 <= earlier.epochs < budget
        and before.get("max_time") == now.get("max_time")
    )


def check_run_directory(out: Path, cfg: DictConfig) -> RunResult | None:
    """Apply the rules of the module docstring; returns the earlier results to skip to."""
    results, checkpoints = out / RESULTS, out / CHECKPOINTS
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    if cfg.get("overwrite", False) and (results.exists() or has_checkpoints):
        moved = _move_aside(out)
        log.warning("overwrite=true: moved the earlier run of %s to %s", out, moved)
        return None
    if results.exists():
        earlier = RunResult.load(out)
        if same_run(earlier.config or {}, cfg):
            log.info("%s already holds the results of this run: skipping it", out)
            return earlier
        epochs = (cfg.get("trainer") or {}).get("max_epochs")
        longer = (  # continued from its last.ckpt only (without it: from scratch)
            (checkpoints / "last.ckpt").is_file()
            and not _not_resumable(earlier.config or {}, cfg)
            and (epochs is None or epochs < 0 or epochs > earlier.epochs)
        )
        stopped = longer and _stopped_early(earlier, cfg)
        longer = longer and not stopped
        if longer and cfg.get("resume", False):  # to more epochs: the run is unfinished again
            _check_resumed(out, cfg)
            moved = _move_aside(out, [RESULTS, FAILED])
            log.warning("resume=true: continuing the finished run of %s (its results were "
                        "moved to %s)", out, moved)  # fmt: skip
            return None
        raise RunDirectoryError(
            f"{out} holds the results of a run with another config; choose another "
            "directory (hydra.run.dir=...) or pass overwrite=true (the earlier files are "
            "moved to replaced-<time>/)"
            + ("; resume=true continues it from checkpoints/last.ckpt" if longer else "")
            + (f"; it stopped before its trainer.max_epochs, after {earlier.epochs} epochs "
               "(early stopping, or trainer.max_time): more epochs do not continue it"
               if stopped else "")
        )  # fmt: skip
    if has_checkpoints and cfg.get("resume", False):
        _check_resumed(out, cfg)
    elif has_checkpoints:
        try:
            debugging = debug_settings(_stored_config(out) or {})
        except Exception:  # a stored config that is no run's (the file is data): named below
            debugging = []
        if debugging:  # it wrote no results.json: not unfinished, but no results either
            raise RunDirectoryError(
                f"{out} holds the checkpoints of a debugging run ({', '.join(debugging)}): "
                "pass overwrite=true to run here again (its files are moved to "
                "replaced-<time>/), or choose another directory"
            )
        raise RunDirectoryError(
            f"{out} holds the checkpoints of an unfinished run: pass resume=true to continue "
            "it from checkpoints/last.ckpt, or overwrite=true to start again (the earlier "
            "files are moved to replaced-<time>/)"
        )
    return None


def _last_entries(out: Path, *keys: str) -> tuple | None:
    """The entries ``keys`` of ``checkpoints/last.ckpt`` (a weights-only read); None where
    there is no checkpoint, or not one (the caller says what the folder holds)."""
    last = out / CHECKPOINTS / "last.ckpt"
    try:
        files.check_weights_only(last)
        return tuple(files.checkpoint_entry(last, key) for key in keys)
    except Exception:
        return None


def _stored_config(out: Path) -> dict | None:
    """The config stored in ``checkpoints/last.ckpt`` (:class:`RunConfig`), if one is there."""
    earlier = (_last_entries(out, RunConfig.KEY) or (None,))[0]
    return earlier if isinstance(earlier, dict) else None


def debug_settings(cfg: DictConfig) -> list[str]:
    """The settings of :data:`DEBUG_TRAINER_KEYS` in ``cfg`` that limit the run: a
    ``limit_*_batches`` other than the float 1.0 (Lightning reads an int as a number of
    batches, ``1`` as one), any other key set and not 0."""
    trainer = cfg.get("trainer") or {}
    found = []
    for key in DEBUG_TRAINER_KEYS:
        value = trainer.get(key)
        if value is None or value is False:
            continue
        if key.startswith("limit_"):
            limited = not (isinstance(value, float) and value >= 1.0)
        else:
            limited = value != 0
        if limited:
            # reprlib: the values of a checkpoint's stored config are data (long, escapes)
            found.append(f"trainer.{key}={reprlib.repr(value)}")
    return found


def job_name() -> str:
    """The job's overrides within a Hydra sweep (``data.fold=3,model=nolp``), else ``""``."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    job = HydraConfig.get().job
    return job.override_dirname or f"job {job.num}"


def _ogb_scores(tested: dict) -> dict | None:
    """OGB's evaluator scores of the fair protocol's test (``test/ogb_<metric>``)."""
    scores = {
        k.removeprefix("test/ogb_"): v for k, v in tested.items() if k.startswith("test/ogb_")
    }
    return scores or None


def build(cfg: DictConfig, out: Path):
    """The data module (loaded once, with the model's transform), the LightningModule built
    from its facts, the trainer and the history of a config, run in ``out`` (the config's
    ``output_dir`` then: its checkpoints and logs too)."""
    cfg, out = _in_directory(cfg, out)
    detail = logging.getLogger(DETAIL) if job_name() else log  # a sweep's job: train.log
    interval = (cfg.get("trainer") or {}).get("val_check_interval")
    if interval is not None and not (isinstance(interval, float) and interval == 1.0):
        raise ValueError(
            f"trainer.val_check_interval={interval} validates within an epoch (an int: every "
            "that many batches): a run's history, its fair protocol and an exact resume go "
            "by epoch; use trainer.check_val_every_n_epoch"
        )
    missing = sorted(OmegaConf.missing_keys(cfg.data))
    if missing:
        raise ValueError(f"Missing mandatory value: {', '.join(f'data.{k}' for k in missing)}")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = instantiate(followed_by(data, data_transform(cfg.model)))
    datamodule.setup("fit")
    detail.info("%s", datamodule.describe())
    task = datamodule.task
    # the module resolves scheduler_monitor: auto itself (as when instantiated by hand)
    module = instantiate(cfg.module, _recursive_=False, model=cfg.model)
    module.connect(datamodule)
    detail.info(
        "model %s: %s, %s parameters",
        cfg.model.get("variant"), type(module.model).__name__,
        f"{sum(p.numel() for p in module.parameters()):,}",
    )  # fmt: skip
    history = EpochHistory(out / HISTORY)
    callbacks = [
        instantiate(c, **_selection(c, task), **_at_epoch_end(c))
        for c in (cfg.get("callbacks") or {}).values()
        if c
    ]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: Trainer = instantiate(
        cfg.trainer,
        callbacks=[
            *callbacks,
            history,
            EpochLog(job_name()),
            RelocateCheckpoints(),
            RunConfig(comparable_config(cfg)),
        ],  # fmt: skip
        logger=loggers or False,
    )
    return datamodule, module, trainer, history


def _selection(callback_cfg, task) -> dict:
    """``monitor`` / ``mode`` for a callback config that says ``auto``."""
    extra = {}
    monitor = callback_cfg.get("monitor")
    if monitor == AUTO:
        extra["monitor"] = monitor = f"val/{task.metric}"
    if callback_cfg.get("mode") == AUTO:  # the direction of what it watches (val/loss: min)
        extra["mode"] = task.mode_of(monitor)
    return extra


def _at_epoch_end(callback_cfg) -> dict:
    """``save_on_train_epoch_end=True`` for a ModelCheckpoint of no metric (``last.ckpt``)
    that does not say: Lightning otherwise saves it at the end of validation where
    ``check_val_every_n_epoch`` is not 1, so not after an epoch without validation, and
    before :class:`EpochHistory` has its epoch (a resumed run's history lost that epoch)."""
    kind = str(callback_cfg.get("_target_", ""))
    if (
        kind.endswith("ModelCheckpoint")
        and callback_cfg.get("monitor") is None
        and callback_cfg.get("save_on_train_epoch_end") is None
    ):
        return {"save_on_train_epoch_end": True}
    return {}


def _prepare_process(cfg: DictConfig, sweep: bool) -> None:
    """Torch's threads and Lightning's console, as every job sets them."""
    quiet_lightning(sweep=sweep)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


def _in_directory(cfg: DictConfig, output_dir: str | os.PathLike | None) -> tuple[DictConfig, Path]:
    """``cfg`` and the directory it runs in: ``output_dir`` where given, then also the config's
    ``output_dir`` (the ``${output_dir}`` of the checkpoints, the loggers and the trainer's
    ``default_root_dir``: every file of the run in one directory), else ``cfg.output_dir``."""
    if output_dir is None:
        return cfg, Path(cfg.output_dir)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.output_dir = os.path.abspath(output_dir)
    return cfg, Path(output_dir)


def train(cfg: DictConfig, output_dir: str | os.PathLike | None = None) -> RunResult:
    """Train and evaluate one config in ``output_dir`` (default: ``cfg.output_dir``).

    Returns:
        RunResult: what ``results.json`` holds. After Ctrl-C, Lightning shuts down gracefully
        and exits (``SystemExit``); ``checkpoints/last.ckpt`` holds the last finished epoch.
    """
    cfg, out = _in_directory(cfg, output_dir)
    # a directory made for this run alone goes again if the run cannot be set up (a typo in
    # the config); a sweep's jobs keep their failed.json for the report
    job = job_name()
    discard = job == "" and (not out.exists() or _only_hydra_files(out))
    out.mkdir(parents=True, exist_ok=True)
    _prepare_process(cfg, sweep=bool(job))
    if _launcher_rank() != 0:  # the DDP ranks Lightning starts: rank 0 holds the directory
        return _run(cfg, out, discard=False)
    with _holding(out):
        for folder in (out, out / CHECKPOINTS, out / HYDRA_SUBDIR):  # a killed run's half writes
            files.remove_leftovers(folder)
        results = check_run_directory(out, cfg)
        if results is None:  # it writes: what it writes into is no link (a run directory
            # copied from elsewhere may point them outside it)
            files.refuse_links(*(out / name for name in WRITTEN_THROUGH), owner="a run")
            save_hydra_config(cfg, out)
            results = _run(cfg, out, discard)
    saved = out / RESULTS
    where = saved if saved.exists() else f"not written ({out} is a debug run)"
    if job:  # a sweep: one line per job on the console, the detail in its train.log
        log.info("[%s] %s; results: %s", job, "; ".join(results.summary(short=True)), where)
    else:
        for line in results.summary():
            log.info(line)
        log.info("results: %s", where)
    return results


#: the folders and the log file of a run directory that are written into (appended to, for
#: Hydra's ``train.log``) or emptied: refused where they are links
WRITTEN_THROUGH = (HYDRA_SUBDIR, CHECKPOINTS, "logs", "train.log")


@contextlib.contextmanager
def _holding(out: Path) -> Iterator[None]:
    """Hold the lock of the run directory ``out`` (its file goes when the block ends).

    Raises:
        RunDirectoryError: another process holds the lock.
    """
    lock = RemovableLock(out / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirectoryError(
            f"another run is using {out} (it holds {out / LOCK}): wait for it to finish, or "
            "choose another directory (hydra.run.dir=... or output_dir=...)"
        ) from None
    try:
        yield
    finally:
        lock.release()


#: what Hydra writes into a job's directory before the job runs, and the run's lock
HYDRA_FILES = frozenset({HYDRA_SUBDIR, "train.log", LOCK})


def _only_hydra_files(out: Path) -> bool:
    """Whether ``out`` is the directory Hydra made for this job, with nothing else in it."""
    if not HydraConfig.initialized():
        return False
    made = Path(HydraConfig.get().runtime.output_dir).resolve() == out.resolve()
    return made and {p.name for p in out.iterdir()} <= HYDRA_FILES


def save_hydra_config(cfg: DictConfig, out: Path) -> None:
    """Under Hydra, write a job's ``.hydra/`` files into ``out`` once the run holds its lock
    (Hydra's own writing, before the job runs, is off: ``hydra.output_subdir: null``)."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = out / HYDRA_SUBDIR
    folder.mkdir(exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", {"hydra": hydra_cfg}),
        ("overrides.yaml", hydra_cfg.overrides.task),
    ):
        files.write_atomically(folder / name, OmegaConf.to_yaml(node))


def _remove_new_directory(out: Path) -> None:
    """Remove ``out`` and the empty folders above it, up to the working directory."""
    shutil.rmtree(out, ignore_errors=True)
    parent, stop = out.parent.resolve(), Path.cwd().resolve()
    while parent != stop and parent.is_relative_to(stop):
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
        parent = parent.parent


def evaluate(cfg: DictConfig, output_dir: str | os.PathLike | None = None) -> dict:
    """``train=false ckpt_path=PATH``: test a checkpoint on the test fold of ``cfg.data``
    and write the metrics to ``eval.json``.

    Raises:
        ValueError: no ``ckpt_path``, or a checkpoint that cannot be read or is not the data's.
        FileNotFoundError: the checkpoint does not exist.
        RunDirectoryError: the output directory holds a run or an evaluation (nothing there
            is replaced), or another run holds its lock.
    """
    from diffpool.training.results import write_json

    cfg, out = _in_directory(cfg, output_dir)
    _prepare_process(cfg, sweep=bool(job_name()))
    if not cfg.get("ckpt_path"):
        raise ValueError("train=false evaluates a checkpoint: pass ckpt_path=PATH")
    out.mkdir(parents=True, exist_ok=True)
    with _holding(out):
        held = [name for name in (RESULTS, FAILED, CHECKPOINTS, HYDRA_SUBDIR, EVAL)
                if os.path.lexists(out / name)]  # fmt: skip
        if held:  # a training run's record, or an earlier evaluation: nothing is replaced
            raise RunDirectoryError(
                f"{out} holds {', '.join(held)}: train=false writes eval.json and .hydra/ into "
                "a directory of its own (hydra.run.dir=... or output_dir=...)"
            )
        report = _evaluate(cfg, Path(cfg.ckpt_path))
        save_hydra_config(cfg, out)
        write_json(out / EVAL, report, overwrite=False)
    log.info("results: %s", out / EVAL)
    return report


def _evaluate(cfg: DictConfig, path: Path) -> dict:
    """What :func:`evaluate` writes to ``eval.json``."""
    from diffpool.training.predict import load_checkpoint, load_data

    module = load_checkpoint(path, trust=list(cfg.get("trust") or []))
    datamodule = load_data(module, OmegaConf.to_container(cfg.data, resolve=True), path)
    trainer: Trainer = instantiate(cfg.trainer, logger=False, callbacks=[], devices=1)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items())}
    scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("test/"))
    log.info(
        "%s fold %d/%d, checkpoint %s: %s",
        datamodule.name, datamodule.fold, datamodule.num_folds, path, scores,
    )  # fmt: skip
    return {"checkpoint": str(path), "dataset": datamodule.name, "fold": datamodule.fold,
            "num_folds": datamodule.num_folds, "metrics": metrics}  # fmt: skip


def _run(cfg: DictConfig, out: Path, discard: bool) -> RunResult:
    origin = provenance()
    started = time.time()
    try:
        seed_everything(cfg.seed, workers=True, verbose=False)
        parts = build(cfg, out)
        write_checkpoints_atomically(parts[2])  # no half-written checkpoint on a full disk
    except Exception:
        if discard:
            _remove_new_directory(out)
        elif _launcher_rank() == 0:
            _record_failure(cfg, out, origin)
        raise
    try:
        return _train(cfg, out, started, origin, *parts)
    except Exception:
        if _launcher_rank() == 0:
            _record_failure(cfg, out, origin)
        raise


def _best_checkpoint(trainer: Trainer, monitor: str, mode: str, epoch: int) -> str:
    """The path of the checkpoint of ``epoch`` that a ModelCheckpoint selecting on
    ``monitor`` in ``mode`` kept as its best ("" without one: another metric's best, or a
    callback that skipped that epoch, holds another epoch's weights)."""
    if epoch < 0:
        return ""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor == monitor:
            path = callback.best_model_path
            if callback.mode == mode and path:
                return path if files.checkpoint_entry(path, "epoch") == epoch else ""
    return ""


def _record_failure(cfg: DictConfig, out: Path, origin: dict) -> None:
    err = sys.exc_info()[1]
    RunFailure(
        error=f"{type(err).__name__}: {err}",
        traceback=traceback.format_exc(),
        config=comparable_config(cfg),
        provenance=origin,
    ).save(out)


def _train(
    cfg: DictConfig,
    out: Path,
    started: float,
    origin: dict,
    datamodule,
    module,
    trainer: Trainer,
    history: EpochHistory,
) -> RunResult:
    last = out / CHECKPOINTS / "last.ckpt"
    ckpt_path = str(last) if cfg.get("resume", False) and last.exists() else None
    if cfg.get("resume", False) and ckpt_path is None:
        log.warning("resume=true but %s does not exist: starting from scratch", last)
    if ckpt_path is not None:  # Lightning's load also takes what libraries allowlisted
        try:
            files.check_weights_only(ckpt_path)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{err}: resume=true continues only from a checkpoint") from None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1)
        if trainer.interrupted:
            log.warning(
                "training was interrupted after %d finished epochs; continue it with "
                "resume=true (from %s)",
                len(history.epochs),
                last,
            )
        raise
    task = module.task
    name = task.metric
    val_curve, heldout_curve = history.curve(f"val/{name}"), history.curve(f"heldout/{name}")
    # -1 without a validation set, or without a value in it (one class: no AUC)
    best = best_epoch(val_curve, task.higher_is_better)
    # the fair protocol tests the weights of the best validation epoch, kept by a checkpoint
    # of that metric (none: no test)
    best_path = _best_checkpoint(trainer, f"val/{name}", task.mode, best)
    tested = []
    if best_path:
        # the run's own checkpoint: it may build what the run's config names
        trust = targets.target_names(dict(module.hparams))
        kept = type(module).load_from_checkpoint(best_path, weights_only=True, trust=trust)
        tested = trainer.test(kept, datamodule=datamodule, verbose=False)
    elif best >= 0:
        log.warning(
            "no checkpoint of val/%s kept its best epoch %d (callbacks=default keeps it): the "
            "fair protocol's test is not run", name, best
        )  # fmt: skip
    results = RunResult(
        dataset=datamodule.name,
        fold=datamodule.fold,
        num_folds=datamodule.num_folds,
        model=cfg.model.get("variant"),
        epochs=len(history.epochs),
        fair=FairResult(
            best_epoch=best,
            val=val_curve[best] if best >= 0 else None,
            test=tested[0][f"test/{name}"] if tested else None,
            checkpoint=best_path or None,
        ),
        test_curve=heldout_curve,
        val_curve=val_curve,
        # a resumed run counts the fitting time of the epochs it restored as well
        wall_time_s=round(time.time() - started + history.resumed_elapsed_s, 2),
        config=comparable_config(cfg),
        metric=name,
        higher_is_better=task.higher_is_better,
        task=task.name,
        ogb=_ogb_scores(tested[0] if tested else {}),
        provenance=origin,
        path=out,
    )
    debugging = debug_settings(cfg)
    if debugging:
        results.status = "debug"
        log.warning(
            "a debugging run (%s): no results.json is written, its figures are not results",
            ", ".join(debugging),
        )
    elif trainer.is_global_zero:
        results.save(out)
        if (out / FAILED).exists():
            (out / FAILED).unlink()
    return results
