"""OGB graph-property datasets (``ogbg-*``) offline first, and OGB's evaluator (the ``ogb``
extra: ``pip install ".[ogb]"`` in a clone)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from diffpool.datasets.source import DataUnavailableError
from diffpool.utils.extras import require


def _ogb():
    require("ogb", "OGB datasets and their evaluator")
    import ogb.graphproppred as graphproppred

    return graphproppred


def ogb_folder(name: str, root: str | os.PathLike) -> Path:
    """Where OGB keeps ``name`` under ``root``: ``root/ogbg_molhiv`` for ``ogbg-molhiv``."""
    return Path(root) / name.replace("-", "_")


def load_ogb(
    name: str,
    root: str | os.PathLike = "data/OGB",
    download: bool = False,
    transform=None,
    pre_transform=None,
):
    """OGB's ``PygGraphPropPredDataset(name, root)``, which has ``get_idx_split()``,
    ``task_type``, ``num_tasks`` and ``eval_metric``.

    Offline first: ``root/<name with _>/`` must hold OGB's files (``raw/*.csv.gz``,
    ``split/``, ``RELEASE_v1.txt``, as OGB's zip unpacks) or the processed dataset. Without
    them, ``download=False`` is an error that says where they go; ``download=True`` lets OGB
    fetch them.
    """
    from diffpool.datasets.source import call_dataset
    from diffpool.utils.files import check_processed, local_root, only_globals, pyg_data_classes

    graphproppred = _ogb()
    root = local_root(root)
    folder = ogb_folder(name, root)
    if not name.startswith("ogbg-"):
        raise ValueError(f"{name!r} is not an OGB graph-property dataset (ogbg-...)")
    present = (folder / "raw").is_dir() or (folder / "processed").is_dir()
    if not present and not download:
        raise DataUnavailableError(
            f"{name} is not in {folder}: unzip OGB's {name.removeprefix('ogbg-')}.zip there "
            f"(it holds raw/, split/ and RELEASE_v1.txt) or pass download=true "
            "(data.dataset.download=true) where the internet is reachable"
        )
    if present and not any(folder.glob("RELEASE_v*.txt")):
        raise DataUnavailableError(
            f"{folder} has no RELEASE_v*.txt: OGB would ask on the console whether to replace "
            "it; copy the whole folder of OGB's zip (RELEASE_v1.txt included)"
        )
    # OGB reads its processed file with a plain torch.load, which since torch 2.6 loads
    # weights only: allow the PyG storage classes that file holds (nothing else)
    with only_globals(pyg_data_classes()):
        try:
            check_processed(folder / "processed")
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{err}: remove {folder / 'processed'} to process {name} again from raw/"
            ) from None
        return call_dataset(
            graphproppred.PygGraphPropPredDataset,
            "ogb.graphproppred.PygGraphPropPredDataset",
            name=name,
            root=str(root),
            transform=transform,
            pre_transform=pre_transform,
        )


def ogb_evaluator(name: str):
    """``ogb.graphproppred.Evaluator(name)``: the leaderboard's metric of the dataset."""
    return _ogb().Evaluator(name)
