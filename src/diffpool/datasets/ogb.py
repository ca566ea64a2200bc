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


def _archive(graphproppred, name: str) -> tuple[str, str] | None:
    """The URL of OGB's zip of ``name`` and the folder that zip holds, as OGB's own table
    (``master.csv``) lists them: ``(".../hiv.zip", "hiv")`` for ``ogbg-molhiv``, whose folder
    OGB renames to ``ogbg_molhiv`` once unpacked; :obj:`None` for a name the table lacks."""
    import pandas as pd

    table = Path(graphproppred.__file__).with_name("master.csv")
    try:
        master = pd.read_csv(table, index_col=0, keep_default_na=False)
        return str(master[name]["url"]), str(master[name]["download_name"])
    except (OSError, KeyError, ValueError):
        return None


def ogb_folder(name: str, root: str | os.PathLike) -> Path:
    """Where OGB keeps ``name`` under ``root``: ``root/ogbg_molhiv`` for ``ogbg-molhiv``, or
    ``root/ogbg_molhiv_pyg`` where that exists (OGB's ``PygGraphPropPredDataset`` takes a
    folder of that name, an earlier download's, whenever there is one)."""
    folder = Path(root) / "_".join(name.split("-"))
    earlier = folder.with_name(f"{folder.name}_pyg")
    return earlier if os.path.exists(earlier) else folder


class _Split:
    """``get_idx_split()`` of an OGB dataset without OGB's plain ``torch.load`` of
    ``split/<type>/split_dict.pt`` (which unpickles whenever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    is set): that file is loaded weights-only, with torch's allowlist only; the CSV files are
    read as OGB reads them."""

    def __init__(self, folder: Path, split_type: str):
        self.folder, self.split_type = Path(folder), split_type

    def __call__(self, split_type: str | None = None) -> dict:
        import pandas as pd
        import torch

        from diffpool.utils.files import load

        path = self.folder / "split" / (split_type or self.split_type)
        if (path / "split_dict.pt").is_file():
            return load(path / "split_dict.pt")

        def read(part: str):
            table = pd.read_csv(path / f"{part}.csv.gz", compression="gzip", header=None)
            return torch.tensor(table.values.T[0], dtype=torch.long)

        return {"train": read("train"), "valid": read("valid"), "test": read("test")}


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
    fetch them. OGB reads ``root/<name with _>_pyg/`` instead where that exists
    (:func:`ogb_folder`).

    The files are data: the torch files of ``processed/`` and ``split/`` that a weights-only
    load would refuse are errors before OGB reads them, the dataset's ``get_idx_split()``
    loads ``split_dict.pt`` weights-only itself, and the dataset's folders may not be links.
    """
    from diffpool.datasets.source import call_dataset
    from diffpool.utils.files import (
        check_processed,
        check_weights_only,
        local_root,
        only_globals,
        pyg_data_classes,
        refuse_links,
    )

    graphproppred = _ogb()
    root = local_root(root)
    folder = ogb_folder(name, root)
    if not name.startswith("ogbg-"):
        raise ValueError(f"{name!r} is not an OGB graph-property dataset (ogbg-...)")
    plain = root / "_".join(name.split("-"))
    refuse_links(plain, plain.with_name(f"{plain.name}_pyg"))
    refuse_links(*(folder / part for part in ("raw", "processed", "split")))
    present = (folder / "raw").is_dir() or (folder / "processed").is_dir()
    if not present and not download:
        archive = _archive(graphproppred, name)
        where = (
            f"unzip OGB's {archive[0].rpartition('/')[2]} ({archive[0]}) and move its "
            f"{archive[1]}/ folder (raw/, split/ and RELEASE_v1.txt) to {folder}"
            if archive
            else "put the folder of OGB's zip (raw/, split/ and RELEASE_v1.txt) there"
        )
        raise DataUnavailableError(
            f"{name} is not in {folder}: {where}, or pass download=true "
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
        try:
            for path in sorted((folder / "split").rglob("*.pt")):
                check_weights_only(path)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{err}: restore {name}'s split/ from OGB's zip") from None
        dataset = call_dataset(
            graphproppred.PygGraphPropPredDataset,
            "ogb.graphproppred.PygGraphPropPredDataset",
            name=name,
            root=str(root),
            transform=transform,
            pre_transform=pre_transform,
        )
    dataset.get_idx_split = _Split(dataset.root, dataset.meta_info["split"])
    return dataset


def ogb_evaluator(name: str):
    """``ogb.graphproppred.Evaluator(name)``: the leaderboard's metric of the dataset."""
    return _ogb().Evaluator(name)
