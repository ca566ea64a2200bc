"""``diffpool-predict run=RUN_DIR [key=value ...]``: a Hydra app (``conf/predict.yaml``) that
runs ``Trainer.predict`` on a trained run with a
:class:`~diffpool.training.predict.PredictionWriter`. Needs the ``train`` extra."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from diffpool.cli import extras_present

PROG = "diffpool-predict"


def _check(cfg) -> None:
    from omegaconf import OmegaConf

    from diffpool.training.datamodule import PREDICT_SPLITS

    if cfg.split not in PREDICT_SPLITS:
        raise ValueError(f"split must be one of {', '.join(PREDICT_SPLITS)}, got {cfg.split!r}")
    if not isinstance(cfg.assignments, bool):
        raise ValueError(f"assignments must be true or false, got {cfg.assignments!r}")
    for key, least in (("threads", 0), ("batch_size", 1)):
        value = cfg[key]
        if not (type(value) is int and value >= least or key == "batch_size" and value is None):
            raise ValueError(f"{key} must be a whole number >= {least}, got {value!r}")
    if OmegaConf.is_missing(cfg, "run"):
        raise ValueError("run= is a diffpool-train job directory or a .ckpt in it")


def _literal(value):
    """A value read from a run's file, its text escaped for OmegaConf: ``${...}`` stays text
    (an interpolation would read environment variables, ``oc.env``, or fail to parse), and
    without ``_target_`` entries: what a data option interpolates from it
    (``${model.hidden_channels}``) joins the user's data, whose names :func:`load_run
    <diffpool.training.predict.load_run>` trusts as named at the call."""
    if isinstance(value, str):  # the backslashes before ${ doubled, then one more
        return re.sub(r"(\\*)\$\{", lambda m: 2 * m.group(1) + "\\${", value)
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items() if k != "_target_"}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def predict(cfg) -> None:
    """The job; a usage error (exit status 2) for a bad option, run or file."""
    from omegaconf import OmegaConf, open_dict

    try:
        _check(cfg)
        run = Path(cfg.run)

        import torch
        from lightning.pytorch import Trainer

        from diffpool.training.console import quiet_lightning
        from diffpool.training.predict import PredictionWriter, load_run
        from diffpool.training.results import RunResult

        torch.set_num_threads(cfg.threads or torch.get_num_threads())
        quiet_lightning(sweep=True)  # nor Lightning's lines on accelerators
        run_dir = run.parent.parent if run.suffix == ".ckpt" else run
        earlier = RunResult.load(run_dir).config
        seed = earlier.get("seed", 0)
        if seed is not None and type(seed) is not int:
            raise ValueError(
                f"{run_dir / 'results.json'}: config.seed must be an int, got {seed!r:.80}"
            )
        with open_dict(cfg):  # what data=<option> interpolates is the run's: as data, no
            cfg.seed, cfg.model = seed, _literal(earlier.get("model"))
        data = {**OmegaConf.to_container(cfg.data, resolve=True), "predict_split": cfg.split}
        if cfg.batch_size:
            data["batch_size"] = cfg.batch_size
        trust = [cfg.trust] if isinstance(cfg.trust, str) else list(cfg.trust or [])
        module, datamodule = load_run(run, cfg.checkpoint, data=data, trust=trust)
        out = cfg.out or run_dir / f"predictions-{cfg.split}.csv"
        writer = PredictionWriter(out, cfg.assignments)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[writer])  # fmt: skip
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    predictions, fold = writer.predictions, f" (fold {datamodule.fold})"
    line = f"{len(predictions['graph_id'])} graphs of {datamodule.name}, {cfg.split}"
    line += "" if cfg.split == "all" else fold
    target = predictions["target"]
    if target is not None and predictions.get("probabilities") is not None:
        present = ~target.isnan() if target.is_floating_point() else target == target
        hits = (predictions["prediction"] == target)[present].float()  # labels given only
        line += f", accuracy {float(hits.mean()):.4f}" if hits.numel() else ""
    print("\n".join([line] + [f"wrote {path}" for path in writer.written]))


def main(argv: list[str] | None = None) -> int:
    """The console script (``argv``: the overrides, default the command line's); returns 0,
    2 for a usage error or 1 for Hydra's."""
    if not extras_present(PROG, "train"):
        return 2
    import hydra

    app = hydra.main(version_base="1.3", config_path="pkg://diffpool.conf", config_name="predict")
    saved, sys.argv = sys.argv, [PROG, *(sys.argv[1:] if argv is None else argv)]
    try:
        app(predict)()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
