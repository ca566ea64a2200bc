"""Hydra configs of ``diffpool-train`` (installed as the package ``diffpool.conf``).

Besides the files of ``data/``, every dataset of the TU collection that the package knows
(:data:`diffpool.datasets.names.KNOWN`) is a ``data`` option under its lower-case name
(``diffpool-train data=nci1``): the generic ``data/tu.yaml`` with that name; and every OGB
molecule dataset (:data:`~diffpool.datasets.names.OGB_MOLECULES`) under its own name
(``data=ogbg-molhiv``): ``data/ogbg.yaml`` with that name. Every TU option, the files of
``data/`` included, is also an option as the collection spells it and in upper case
(``data=NCI1``, ``data=ENZYMES``, ``data=PROTEINS_full``, ``data=PROTEINS_FULL``): an alias
of the lower-case option (:data:`ALIASES`), which a sweep's job directory names by its
lower-case option, so that a job is found again whichever spelling started it. They are
registered in Hydra's ConfigStore when Hydra reads this package.
"""

from importlib import resources

#: the ``data`` options that are other spellings of a TU dataset's lower-case option
#: (``"NCI1"``, ``"PROTEINS_full"``, ``"PROTEINS_FULL"``) -> that option (``"nci1"``)
ALIASES: dict[str, str] = {}


def data_option(name: str) -> str:
    """The ``data`` option that ``name`` stands for: its lower-case option where ``name`` is an
    alias (:data:`ALIASES`), else ``name`` itself."""
    return ALIASES.get(name, name)


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
        # the collection's spelling and upper case, once each: the same config as the option
        for alias in sorted({name, name.upper()} - {option}):
            store.store(group="data", name=alias, node={"defaults": [option, "_self_"]})
            ALIASES[alias] = option
    for name in OGB_MOLECULES:
        node = {"defaults": ["ogbg", "_self_"], "dataset": {"name": name}}
        store.store(group="data", name=name, node=node)


_register_tu_datasets()
