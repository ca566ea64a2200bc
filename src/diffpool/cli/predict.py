"""``diffpool-predict RUN_DIR_OR_CKPT [key=value ...]``: a trained run's predictions as a table,
and optionally what its pooling did, per graph.

    diffpool-predict runs/ENZYMES/diffpool/2026-12-01_19-25-37                 # the test fold
    diffpool-predict RUN_DIR split=all out=enzymes.csv assignments=true
    diffpool-predict RUN_DIR/checkpoints/last.ckpt data.root=/elsewhere/TU
    diffpool-predict RUN_DIR data=proteins_full data.node_features=labels split=all

Options (``key=value``): ``split`` (test, val, train or all; default test), ``out`` (a .csv or
.parquet file; default ``RUN_DIR/predictions-<split>.csv``), ``assignments`` (true: also one
``<out>.level<l>.pt`` per pooling level, read with
:func:`diffpool.training.predict.load_assignments`), ``checkpoint`` (best, last or a path;
default best), ``threads`` (default 1), ``batch_size``, ``data=<option>`` (another data config of
``diffpool-train``), ``data.<key>=<value>`` (one entry of the data config) and ``trust`` (names,
comma-separated, that the run's files may build besides the package's registries: a run's
checkpoint and results.json are data, and build only the package's models, encoders, optimizers
and datasets, and the names given here or as ``data...._target_=``). Needs the ``train``
extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from diffpool.cli import extras_present

#: the options of ``key=value`` form besides ``data=`` and ``data.<key>=``
OPTIONS = {"split": "test", "out": None, "assignments": "false", "checkpoint": "best",
           "threads": "1", "batch_size": None, "trust": ""}  # fmt: skip


def parse_options(items: list[str]) -> tuple[dict[str, str], str | None, dict]:
    """``key=value`` items as (options, the data config option, data overrides).

    Raises:
        ValueError: an item that is not ``key=value``, an unknown key, or a value that the
            option does not take (the message names the option and what it takes).
    """
    import yaml

    from diffpool.training.datamodule import PREDICT_SPLITS

    options, group, data = dict(OPTIONS), None, {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        if key == "data":
            group = value
        elif key.startswith("data."):  # data.dataset.root=X: a nested entry
            *parents, last = key[5:].split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"{key}: data.{part} is given a value and entries")
            node[last] = yaml.safe_load(value)
        elif key in OPTIONS:
            options[key] = value
        else:
            raise ValueError(f"unknown option {key!r}: the options are data=, data.<key>=, "
                             + ", ".join(f"{k}=" for k in OPTIONS))  # fmt: skip
    if options["split"] not in PREDICT_SPLITS:
        splits = ", ".join(PREDICT_SPLITS)
        raise ValueError(f"split must be one of {splits}, got {options['split']!r}")
    if options["assignments"] not in ("true", "false"):
        raise ValueError(f"assignments must be true or false, got {options['assignments']!r}")
    _check_count(options, "threads", 0, "0: torch's default")
    _check_count(options, "batch_size", 1)
    return options, group, data


def _check_count(options: dict, key: str, least: int, note: str = "") -> None:
    """``options[key]``, where given, is a whole number of at least ``least``."""
    value = options[key]
    if value is not None and not (value.isdecimal() and int(value) >= least):
        note = f" ({note})" if note else ""
        raise ValueError(f"{key} must be a whole number >= {least}{note}, got {value!r}")


def data_config(group: str, seed: int) -> dict:
    """The data config of ``diffpool-train data=<group>`` (with the run's seed)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    try:
        with initialize_config_module("diffpool.conf", version_base="1.3"):
            cfg = compose("train", overrides=[f"data={group}", f"seed={seed}"])
    except MissingConfigException as err:
        # the options in lower case (a TU name works as the collection spells it, too)
        names = sorted({o for o in err.options or () if o == o.lower()})
        options = f": the options are {', '.join(names)}" if names else ""
        raise ValueError(f"data={group} is not a data config of diffpool-train{options}") from None
    return OmegaConf.to_container(cfg.data, resolve=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    if not extras_present("diffpool-predict", "train"):
        return 2
    parser = argparse.ArgumentParser(
        prog="diffpool-predict",
        description="Write the predictions of a trained diffpool-train run (and, with "
        "assignments=true, every level's assignments and pooled embeddings) for the graphs "
        "of a split.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="a finished diffpool-train job directory, or a .ckpt in it")
    parser.add_argument("options", nargs="*", help="key=value")
    args = parser.parse_args(argv)
    try:
        options, group, data = parse_options(args.options)
    except ValueError as err:
        parser.error(str(err))

    import torch
    from lightning.pytorch import Trainer

    from diffpool.training.console import quiet_lightning
    from diffpool.training.predict import (
        collect_predictions,
        load_run,
        write_assignments,
        write_predictions,
    )
    from diffpool.training.results import RunResult

    torch.set_num_threads(int(options["threads"]) or torch.get_num_threads())
    quiet_lightning()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no accelerator lines
    run = Path(args.run)
    run_dir = run.parent.parent if run.suffix == ".ckpt" else run
    try:
        if group is not None:
            seed = RunResult.load(run_dir).config.get("seed", 0)
            data = {**data_config(group, seed), **data}
        data = {**data, "predict_split": options["split"]}
        if options["batch_size"]:
            data["batch_size"] = int(options["batch_size"])
        trust = [name for name in options["trust"].split(",") if name]
        module, datamodule = load_run(run, options["checkpoint"], data=data, trust=trust)
        module.predict_assignments = options["assignments"] == "true"
        out = Path(options["out"] or run_dir / f"predictions-{options['split']}.csv")
        levels = sorted(out.parent.glob(f"{out.name}.level*.pt"))  # one per level
        for path in [out] + (levels if module.predict_assignments else []):
            if path.exists() or path.is_symlink():
                raise FileExistsError(
                    f"{path} exists: choose another out= (nothing was overwritten)"
                )
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)  # fmt: skip
        predictions = collect_predictions(trainer.predict(module, datamodule=datamodule))
        written = [write_predictions(predictions, out)]
        if module.predict_assignments:
            written += write_assignments(predictions, out)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        print(f"diffpool-predict: {err}", file=sys.stderr)
        return 2
    graphs = len(predictions["graph_id"])
    what = f"{datamodule.name}, {options['split']}" + (
        f" (fold {datamodule.fold})" if options["split"] != "all" else ""
    )
    target = predictions["target"]
    accuracy = ""
    if target is not None:
        accuracy = f", accuracy {float((predictions['prediction'] == target).float().mean()):.4f}"
    print(f"{graphs} graphs of {what}{accuracy}")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
