"""``diffpool-train``: the Hydra app that trains and evaluates one config per job.

    diffpool-train data=proteins model=nolp trainer.max_epochs=50
    diffpool-train -m model=diffpool,nolp,det model/encoder=sage,gcn data.fold='range(10)'

The configs ship inside the package (``diffpool.conf``; ``conf/`` in the repository);
``diffpool-train --help`` lists the config groups and ``--cfg job`` prints a composed config.
Needs the ``train`` extra.
"""

from __future__ import annotations

from diffpool.utils.extras import require

#: the resolver that makes a sweep job's override string one folder name
#: (``model/encoder=gcn`` -> ``model.encoder=gcn``; conf/hydra/default.yaml uses it)
PATH_SAFE = "diffpool.path_safe"


def path_safe(overrides: str) -> str:
    """A sweep job's ``override_dirname`` as one directory name: a config group's ``/``
    (``model/encoder=gcn``) would make two nested folders of one job."""
    return overrides.replace("/", ".")


#: the resolver that names a run's dataset folder (``runs/<dataset>/<model>/...``) for any data
#: config: the data's ``name``, else its dataset spec's ``name``, else the spec's class name
DATA_LABEL = "diffpool.data_label"


def data_label(name, dataset_name, target) -> str:
    """``runs/<this>/``: the first of the data config's ``name``, its dataset spec's
    ``name`` and the last part of the spec's ``_target_`` that is set."""
    for value in (name, dataset_name):
        if value not in (None, ""):
            return path_safe(str(value))
    return path_safe(str(target).rsplit(".", 1)[-1]) if target else "data"


def register_resolvers() -> None:
    """Register :data:`PATH_SAFE` and :data:`DATA_LABEL` (idempotent). Runs when this module
    is imported, which includes joblib's worker processes (they import :func:`run` from
    it)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # the train extra is missing: main() says so
        return
    if not OmegaConf.has_resolver(PATH_SAFE):
        OmegaConf.register_new_resolver(PATH_SAFE, path_safe)
    if not OmegaConf.has_resolver(DATA_LABEL):
        OmegaConf.register_new_resolver(DATA_LABEL, data_label)


register_resolvers()


def run(cfg) -> float | None:
    """One job: train and evaluate ``cfg``; returns the entry of ``results.json`` named by
    ``optimized_metric`` (for Hydra's sweepers)."""
    from diffpool.training.run import evaluate, train

    if not cfg.get("train", True):
        evaluate(cfg, cfg.output_dir)
        return None
    # cfg.output_dir is Hydra's job directory unless the user moved it (output_dir=...): the
    # trainer's checkpoints and logs follow cfg.output_dir, so results and history do too
    results = train(cfg, cfg.output_dir)
    metric = cfg.get("optimized_metric")
    return results.lookup(metric) if metric else None


def main() -> None:
    """Entry point of the console script."""
    try:
        require("train", "diffpool-train")
    except ImportError as err:
        raise SystemExit(f"diffpool-train: {err}") from None
    import hydra

    app = hydra.main(version_base="1.3", config_path="pkg://diffpool.conf", config_name="train")
    app(run)()


if __name__ == "__main__":
    main()
