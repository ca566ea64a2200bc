"""Hydra configs of ``diffpool-train`` (installed as the package ``diffpool.conf``).

Besides the files of ``data/``, every dataset of the TU collection that the package knows
(:data:`diffpool.datasets.names.KNOWN`) is a ``data`` option under its lower-case name
(``diffpool-train data=nci1``): the generic ``data/tu.yaml`` with that name; and every OGB
molecule dataset (:data:`~diffpool.datasets.names.OGB_MOLECULES`) under its own name
(``data=ogbg-molhiv``): ``data/ogbg.yaml`` with that name. They are registered in Hydra's
ConfigStore when Hydra reads this package.
"""

from importlib import resources


def _register_tu_datasets() -> None:
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # only Hydra reads this package; without it there is nothing to do
        return
    from diffpool.datasets.names import KNOWN, OGB_MOLECULES

    files = {p.name for p in resources.files(__name__).joinpath("data").iterdir()}
    store = ConfigStore.instance()
    for name in KNOWN:
        option = name.lower()
        if f"{option}.yaml" not in files:
            node = {"defaults": ["tu", "_self_"], "name": name}
            store.store(group="data", name=option, node=node)
    for name in OGB_MOLECULES:
        node = {"defaults": ["ogbg", "_self_"], "dataset": {"name": name}}
        store.store(group="data", name=name, node=node)


_register_tu_datasets()
