"""TU graph-classification benchmarks, offline first.

:func:`load_tu` finds a dataset's raw files, in this order:

1. ``root/NAME/raw/`` already holds the official text files;
2. ``root/NAME.zip`` is the official archive (it is extracted into ``root/NAME/raw/``);
3. the package ships the archive (ENZYMES, PROTEINS and MUTAG, :data:`BUNDLED`);
4. ``download=True``: PyG's :class:`~torch_geometric.datasets.TUDataset` download.

Names are matched without regard to case (``nci1`` is ``NCI1``) against :data:`KNOWN`, the
bundled datasets and the offline copies in ``root``. Then it picks the node features
(:data:`NODE_FEATURES`; ``"auto"``: whatever the dataset has, logged) and, for datasets with
neither node labels nor attributes (the social ones), gives every node its degree or a
constant.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch
from filelock import FileLock
from torch_geometric.data import Data
from torch_geometric.datasets import TUDataset
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import degree

from diffpool.datasets.names import BUNDLED, KNOWN

log = logging.getLogger(__name__)

#: which columns of the TU node features to use (``"auto"``: both where the dataset has both,
#: else the one it has)
NODE_FEATURES = ("auto", "labels", "attributes", "both")

#: features for datasets that have no node labels or attributes
FALLBACK_FEATURES = ("degree", "constant")

_REQUIRED = ("A", "graph_indicator", "graph_labels")


def _raw_complete(raw_dir: Path, name: str) -> bool:
    return all((raw_dir / f"{name}_{part}.txt").exists() for part in _REQUIRED)


def _extract(archive, name: str, raw_dir: Path) -> None:
    """Extract the official ``NAME.zip`` (files under ``NAME/``) into ``raw_dir``, whole or not
    at all: into a temporary folder first (every member's CRC is checked as it is read), moved
    into place once complete, so that a corrupt archive never leaves a partial ``raw/``."""
    partial = raw_dir.parent / f".{raw_dir.name}.partial-{os.getpid()}"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            files = {Path(m.filename).name: m for m in members}
            missing = [p for p in _REQUIRED if f"{name}_{p}.txt" not in files]
            if missing:
                raise ValueError(
                    f"{archive} is not the TU archive of {name}: it lacks "
                    f"{', '.join(f'{name}_{p}.txt' for p in missing)}"
                )
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for filename, member in files.items():
                if filename.startswith(f"{name}_") or filename == "README.txt":
                    (partial / filename).write_bytes(zf.read(member))
        shutil.rmtree(raw_dir, ignore_errors=True)  # an incomplete one: replaced whole
        partial.rename(raw_dir)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError) and not Path(archive).exists():
            raise
        raise ValueError(
            f"{archive} is not a readable zip archive ({type(err).__name__}: {err}); replace it "
            "with the official one"
        ) from err
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _last_int(path: Path) -> int:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64))
        return int(handle.read().split()[-1])


def check_raw(raw_dir: Path, name: str) -> None:
    """The TU text files of ``raw_dir`` agree with each other: one graph label per graph of
    the graph indicator, one node label (and attribute row) per node, one edge label (and
    attribute row) per edge; else an error that names the file that is short or long."""

    def path(part: str) -> Path:
        return raw_dir / f"{name}_{part}.txt"

    num_nodes = _count_lines(path("graph_indicator"))
    num_graphs = _last_int(path("graph_indicator"))
    num_edges = _count_lines(path("A"))
    expected = {
        "graph_labels": (num_graphs, "graphs in the graph indicator"),
        "node_labels": (num_nodes, "nodes in the graph indicator"),
        "node_attributes": (num_nodes, "nodes in the graph indicator"),
        "edge_labels": (num_edges, f"edges in {name}_A.txt"),
        "edge_attributes": (num_edges, f"edges in {name}_A.txt"),
    }
    for part, (count, what) in expected.items():
        if path(part).exists():
            lines = _count_lines(path(part))
            if lines != count:
                raise ValueError(
                    f"{path(part)} has {lines} lines for {count} {what}: the dataset's files "
                    f"do not agree; remove {raw_dir} (it is extracted again from the archive) "
                    "or restore the file"
                )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock on every platform (``filelock``, which torch depends on):
    parallel jobs of a sweep prepare a dataset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def _offline_names(root: Path) -> list[str]:
    """The datasets with an offline copy in ``root`` (``NAME.zip`` or ``NAME/raw/``)."""
    if not root.is_dir():
        return []
    names = {p.stem for p in root.glob("*.zip")}
    names |= {p.name for p in root.iterdir() if (p / "raw").is_dir()}
    return sorted(names)


def resolve_name(name: str, root: str | os.PathLike | None = None) -> str:
    """The TU collection's spelling of ``name``, matched without regard to case against the
    offline copies in ``root``, the bundled datasets and :data:`KNOWN` (``"nci1"`` →
    ``"NCI1"``); ``name`` itself where nothing matches."""
    candidates = [*(_offline_names(Path(root).expanduser()) if root else []), *BUNDLED, *KNOWN]
    if name in candidates:
        return name
    folded = {c.casefold(): c for c in reversed(candidates)}
    return folded.get(name.casefold(), name)


def check_name(name: str, root: str | os.PathLike, download: bool = False) -> None:
    """Refuse a name that cannot be a dataset before anything is written: no offline copy in
    ``root``, not bundled, and either not in :data:`KNOWN` or not to be downloaded. The error
    suggests the close names (each once)."""
    root = Path(root).expanduser()
    if (root / name / "raw").is_dir() or (root / f"{name}.zip").exists() or name in BUNDLED:
        return
    if name in KNOWN and download:
        return
    if name in KNOWN:
        raise FileNotFoundError(
            f"TU dataset {name!r} is not available offline: put the official {name}.zip in "
            f"{root} (or its text files in {root / name / 'raw'}), or pass download=True "
            "(diffpool-train: data.download=true)"
        )
    if download:
        log.warning(
            "%s is not among the TU datasets this package knows: trying to download it", name
        )
        return
    names = sorted({*KNOWN, *BUNDLED, *_offline_names(root)})
    folded = {n.casefold(): n for n in names}
    close = difflib.get_close_matches(name.casefold(), list(folded), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(folded[c] for c in close)}?" if close else ""
    raise ValueError(
        f"unknown TU dataset {name!r}: no offline copy in {root / name / 'raw'} or "
        f"{root / f'{name}.zip'}, and not a name of the TU collection.{hint} "
        "(data.download=true tries PyG's download of any name)"
    )


def prepare_raw(name: str, root: str | os.PathLike, download: bool = False) -> Path:
    """Make sure ``root/NAME/raw/`` holds the dataset's files; returns ``root``.

    Raises:
        ValueError: an unknown name with no offline files, or a corrupt archive.
        FileNotFoundError: no offline copy and ``download=False``.
    """
    root = Path(root).expanduser()
    raw_dir = root / name / "raw"
    if _raw_complete(raw_dir, name):
        return root
    archive = root / f"{name}.zip"
    if archive.exists():
        _extract(archive, name, raw_dir)
        return root
    if name in BUNDLED:
        with resources.as_file(resources.files(__package__) / "archives" / f"{name}.zip") as zp:
            _extract(zp, name, raw_dir)
        return root
    check_name(name, root, download)
    if not download:
        raise FileNotFoundError(
            f"TU dataset {name!r} is not available offline: put the official {name}.zip in "
            f"{root} (or its text files in {raw_dir}), or pass download=True"
        )
    return root


class NodeDegree(BaseTransform):
    """One-hot node degree (capped at ``max_degree``) as the node features."""

    def __init__(self, max_degree: int):
        self.max_degree = int(max_degree)

    def forward(self, data: Data) -> Data:
        deg = degree(data.edge_index[0], data.num_nodes, dtype=torch.long)
        data.x = torch.nn.functional.one_hot(
            deg.clamp(max=self.max_degree), self.max_degree + 1
        ).float()
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.max_degree})"


class ConstantFeature(BaseTransform):
    """A single constant feature 1 for every node."""

    def forward(self, data: Data) -> Data:
        data.x = torch.ones(data.num_nodes, 1)
        return data


def load_tu(
    name: str,
    root: str | os.PathLike,
    node_features: str = "auto",
    fallback_features: str = "degree",
    max_degree: int = 64,
    download: bool = False,
) -> TUDataset:
    r"""Load a TU dataset, offline first (see the module docstring), with chosen features.

    Args:
        name (str): The dataset (``"ENZYMES"``, ``"dd"``: see :func:`resolve_name`).
        root (str): Folder of ``NAME.zip`` archives and ``NAME/`` dataset folders.
        node_features (str, optional): ``"labels"`` (one-hot node labels), ``"attributes"``
            (continuous node attributes), ``"both"`` (attributes, then labels) or ``"auto"``
            (both where the dataset has both, else what it has; the choice is logged). A
            choice the dataset lacks is an error. (default: :obj:`"auto"`)
        fallback_features (str, optional): For datasets without node labels or attributes:
            ``"degree"`` (one-hot, capped at ``max_degree``) or ``"constant"``.
            (default: :obj:`"degree"`)
        max_degree (int, optional): Cap of the one-hot degree. (default: :obj:`64`)
        download (bool, optional): Fall back to PyG's download. (default: :obj:`False`)

    Returns:
        TUDataset: with ``x`` set as asked, and ``transform`` set for the fallback features.
    """
    if node_features not in NODE_FEATURES:
        raise ValueError(f"node_features must be one of {NODE_FEATURES}, got {node_features!r}")
    if fallback_features not in FALLBACK_FEATURES:
        raise ValueError(
            f"fallback_features must be one of {FALLBACK_FEATURES}, got {fallback_features!r}"
        )
    root = Path(root).expanduser()
    asked, name = name, resolve_name(name, root)
    if name != asked:
        log.info("TU dataset %r is %s", asked, name)
    check_name(name, root, download)  # before the lock file and folders are made
    with _locked(root / f".{name}.lock"):
        prepare_raw(name, root, download)
        processed = root / name / "processed"
        raw_dir = root / name / "raw"
        if _raw_complete(raw_dir, name) and not (processed.is_dir() and any(processed.iterdir())):
            check_raw(raw_dir, name)  # before PyG processes them
        try:
            dataset = TUDataset(str(root), name, use_node_attr=True)
        except (ValueError, IndexError, RuntimeError) as err:
            raise ValueError(
                f"could not read the TU files of {name} in {root / name / 'raw'} ({err}); "
                "remove that folder to extract the archive again"
            ) from err
    num_attrs, num_labels = dataset.num_node_attributes, dataset.num_node_labels
    if dataset._data.x is None or num_attrs + num_labels == 0:
        dataset._data.x = None
        if fallback_features == "degree":
            dataset.transform = NodeDegree(max_degree)
            chosen = f"one-hot node degree, capped at {max_degree}"
        else:
            dataset.transform = ConstantFeature()
            chosen = "a constant"
        log.info("%s has no node labels or attributes: its node features are %s", name, chosen)
        return dataset
    if node_features == "auto":
        node_features = (
            "both" if num_attrs and num_labels else "labels" if num_labels else "attributes"
        )
        log.info(
            "%s node features: %s (%d node attributes, %d one-hot node labels in the dataset)",
            name, node_features, num_attrs, num_labels,
        )  # fmt: skip
    lacks = {"labels": num_labels == 0, "attributes": num_attrs == 0}
    wanted = ("labels", "attributes") if node_features == "both" else (node_features,)
    missing = [part for part in wanted if lacks[part]]
    if missing:
        has = "labels" if num_labels else "attributes"
        raise ValueError(
            f"{name} has no node {' or '.join(missing)}: node_features={node_features!r} is "
            f"not possible; use {has!r} or 'auto'"
        )
    if node_features == "labels":
        dataset._data.x = dataset._data.x[:, num_attrs:]
    elif node_features == "attributes":
        dataset._data.x = dataset._data.x[:, :num_attrs]
    return dataset
