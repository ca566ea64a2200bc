"""Optional dependencies: what each extra of the package provides, and a clear error where one
is missing.

The core install (``pip install diffpool``) holds what the layers need: torch, PyG, NumPy.
Everything else is an extra, named after what it enables; a feature used without its extra
raises an :class:`ImportError` that names the extra to install.
"""

from __future__ import annotations

from importlib.util import find_spec

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
            f'{", ".join(absent)}): pip install "diffpool[{extra}]"'
        )
