"""Optional dependencies: what each extra of the package provides, and a clear error where one
is missing.

The core install (``pip install .`` in a clone of the repository) holds what the layers need:
torch, PyG, NumPy. Everything else is an extra, named after what it enables; a feature used
without its extra raises an :class:`ImportError` that names the extra and a command that
installs it (:func:`install_command`; no distribution of this name is published on PyPI).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

#: extra -> the modules it provides (the distributions are declared in pyproject.toml)
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("lightning", "hydra", "omegaconf", "torchmetrics", "yaml"),
    "det": ("pymetis",),
    "graclus": ("torch_cluster",),
    "viz": ("matplotlib", "networkx"),
    "sparse": ("torch_scatter", "torch_sparse"),
    "launchers": ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher"),
    "tensorboard": ("tensorboard",),
    "parquet": ("pyarrow",),
    "ogb": ("ogb",),
}


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed."""
    return [module for module in EXTRAS[extra] if not _installed(module)]


def source_tree() -> Path | None:
    """The repository this package runs from (an editable install, or ``src/`` on the path):
    the folder of ``pyproject.toml`` above ``src/diffpool``; :obj:`None` for an installed
    copy (a wheel in site-packages)."""
    package = Path(__file__).resolve().parents[1]  # .../src/diffpool
    root = package.parents[1]
    if package.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def install_command(extra: str) -> str:
    """The command that installs ``extra``: from the repository this package runs from where
    there is one (``pip install -e "/path/to/diffpool[train]"``, from any folder), else from
    a clone of the repository (``pip install ".[train]"``, in its folder)."""
    root = source_tree()
    if root is not None:
        return f'pip install -e "{root}[{extra}]"'
    return f'pip install ".[{extra}]" (in the folder of a clone of the diffpool repository)'


def require(extra: str, feature: str) -> None:
    """Raise an :class:`ImportError` naming ``extra`` when any of its modules is missing.

    Args:
        extra (str): A key of :data:`EXTRAS`.
        feature (str): What needs it, for the message (``"diffpool.training"``).
    """
    absent = missing(extra)
    if absent:
        raise ImportError(
            f"{feature} needs the '{extra}' extra, which is not installed (missing: "
            f"{', '.join(absent)}): {install_command(extra)}"
        )
