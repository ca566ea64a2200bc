"""``diffpool-train``: the Hydra app that trains and evaluates one config per job.

    diffpool-train data=proteins model=nolp trainer.max_epochs=50
    diffpool-train -m model=diffpool,nolp,det model/encoder=sage,gcn data.fold='range(10)'

The configs ship inside the package (``diffpool.conf``; ``conf/`` in the repository);
``diffpool-train --help`` lists the config groups and ``--cfg job`` prints a composed config.
Needs the ``train`` extra.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from importlib.util import find_spec

from diffpool.utils.extras import install_command, missing, require

#: the resolver that makes a sweep job's override string one folder name (conf/hydra)
PATH_SAFE = "diffpool.path_safe"

#: the ``data=`` item of an override string (at its start or after a ``,``)
_DATA_ITEM = re.compile(r"(?<![^,])data=([^,]+)")


#: the longest job directory name, in bytes (NAME_MAX of Linux's file systems)
MAX_DIRNAME_BYTES = 255


def path_safe(overrides: str) -> str:
    """A sweep job's ``override_dirname`` as one directory name (``model/encoder=gcn`` ->
    ``model.encoder=gcn``), a dataset's other spellings as its option (``data=ENZYMES`` ->
    ``data=enzymes``), so that a job is found again whichever spelling started it."""
    from diffpool.conf import data_option

    overrides = _DATA_ITEM.sub(lambda m: f"data={data_option(m[1])}", overrides)
    name = overrides.replace("/", ".")
    if len(name.encode()) <= MAX_DIRNAME_BYTES:
        return name
    # a file system takes 255 bytes a name: the start, and a digest that tells the jobs apart
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    start = name.encode()[: MAX_DIRNAME_BYTES - len(digest) - 2].decode(errors="ignore")
    return f"{start}..{digest}"


#: the resolver that names a run's dataset folder (``runs/<dataset>/<model>/...``)
DATA_LABEL = "diffpool.data_label"


def data_label(name, dataset_name, target) -> str:
    """``runs/<this>/``: the first of the data config's ``name``, its dataset spec's
    ``name`` and the last part of the spec's ``_target_`` that is set."""
    for value in (name, dataset_name):
        if value not in (None, ""):
            return path_safe(str(value))
    return path_safe(str(target).rsplit(".", 1)[-1]) if target else "data"


#: the resolver that lists the config groups in ``--help`` (conf/hydra/default.yaml's template)
CONFIG_GROUPS = "diffpool.config_groups"

#: config groups that ``--help`` does not list (``experiment_model`` is chosen by the defaults)
HIDDEN_GROUPS = ("hydra", "experiment_model")


def config_groups() -> str:
    """``--help``'s config groups, as Hydra's ``$APP_CONFIG_GROUPS``, without
    :data:`HIDDEN_GROUPS` and the TU datasets' other spellings (one line says them)."""
    from hydra.core.global_hydra import GlobalHydra

    from diffpool.conf import ALIASES

    try:
        hydra = GlobalHydra.instance().hydra
        groups = [g for g in hydra.list_all_config_groups() if g.split("/")[0] not in HIDDEN_GROUPS]
        options = {g: hydra.config_loader.get_group_options(g) for g in groups}
    except Exception:  # another Hydra: string.Template substitutes its own list
        return "$APP_CONFIG_GROUPS"
    lines = []
    for group in sorted(groups):
        shown = [o for o in sorted(options[group]) if group != "data" or o not in ALIASES]
        lines.append(f"{group}: {', '.join(shown)}")
    lines.append(
        "(data: a TU dataset also as the collection spells it and in upper case: data=NCI1, "
        "data=PROTEINS_full, data=PROTEINS_FULL)"
    )
    return "\n".join(lines)


def register_resolvers() -> None:
    """Register the resolvers (idempotent); on import, also in joblib's worker processes."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # the train extra is missing: main() says so
        return
    for name, resolver in (
        (PATH_SAFE, path_safe),
        (DATA_LABEL, data_label),
        (CONFIG_GROUPS, config_groups),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


def run(cfg) -> float | None:
    """One job: train and evaluate ``cfg``; returns the entry of ``results.json`` named by
    ``optimized_metric`` (for Hydra's sweepers)."""
    from diffpool.training.run import evaluate, train

    if not cfg.get("train", True):
        evaluate(cfg)
        return None
    metric = cfg.get("optimized_metric")
    if metric and any("test" in key or "heldout" in key for key in str(metric).split(".")):
        raise ValueError(
            f"optimized_metric={metric} is measured on the test fold: a sweep that optimises "
            "it chooses its hyperparameters on the test set; use fair.val (the validation "
            "set's metric at the best epoch)"
        )
    results = train(cfg)
    if not metric:
        return None
    try:
        return results.lookup(metric)
    except KeyError as err:  # the run's results are written: a sweeper gets None, told why
        logging.getLogger(__name__).error("optimized_metric=%s: %s", metric, err.args[0])
        return None


#: the Hydra plugin of each launcher option (conf/launcher)
LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
}


def main() -> None:
    """Entry point of the console script."""
    try:
        require("train", "diffpool-train")
        for arg in sys.argv[1:]:  # Hydra's error would name only its config group
            key, _, value = arg.partition("=")  # +launcher=slurm: launcher, slurm
            plugin = LAUNCHER_PLUGINS.get(value) if key.lstrip("+~") == "launcher" else None
            if plugin is not None and plugin in missing("launchers"):
                raise ImportError(
                    f"{arg} needs the 'launchers' extra (missing: {plugin}): "
                    f"{install_command('launchers')}"
                )
            # Hydra's list may space or quote its items: logger=[csv, tensorboard]
            loggers = (
                [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",")]
                if key.lstrip("+~") == "logger"
                else []
            )
            if (
                "tensorboard" in loggers
                and missing("tensorboard")
                and not find_spec("tensorboardX")
            ):
                require("tensorboard", arg)  # Lightning's error named no extra
    except ImportError as err:
        raise SystemExit(f"diffpool-train: {err}") from None
    import hydra

    app = hydra.main(version_base="1.3", config_path="pkg://diffpool.conf", config_name="train")
    app(run)()


if __name__ == "__main__":
    main()
