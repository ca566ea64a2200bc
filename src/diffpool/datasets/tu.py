"""TU graph-classification benchmarks, offline first.

:func:`load_tu` finds a dataset's raw files, in this order:

1. ``root/NAME/raw/`` already holds the official text files;
2. ``root/NAME.zip`` is the official archive (it is extracted into ``root/NAME/raw/``);
3. the package ships the archive (ENZYMES, PROTEINS and MUTAG, :data:`BUNDLED`);
4. ``download=True``: PyG's :class:`~torch_geometric.datasets.TUDataset` download.

Then it picks the node features (:data:`NODE_FEATURES`) and, for datasets with neither node
labels nor attributes (the social ones), gives every node its degree or a constant.
"""

from __future__ import annotations

import contextlib
import difflib
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

#: datasets whose official archive ships inside the package
BUNDLED = ("ENZYMES", "PROTEINS", "MUTAG")

#: which columns of the TU node features to use
NODE_FEATURES = ("labels", "attributes", "both")

#: features for datasets that have no node labels or attributes
FALLBACK_FEATURES = ("degree", "constant")

#: the graph-classification datasets of the TU collection that the benchmarks use, to catch
#: typos before a download is attempted (any other name works from offline files)
KNOWN = (
    "AIDS", "BZR", "COLLAB", "COX2", "DD", "DHFR", "ENZYMES", "FRANKENSTEIN", "IMDB-BINARY",
    "IMDB-MULTI", "MUTAG", "MUTAGENICITY", "NCI1", "NCI109", "PROTEINS", "PROTEINS_full",
    "PTC_FM", "PTC_FR", "PTC_MM", "PTC_MR", "REDDIT-BINARY", "REDDIT-MULTI-5K",
    "REDDIT-MULTI-12K", "github_stargazers", "twitch_egos",
)  # fmt: skip

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
    if name not in KNOWN:
        close = difflib.get_close_matches(name, KNOWN + BUNDLED, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown TU dataset {name!r} and no offline copy in {raw_dir} or {archive}.{hint}"
        )
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
    node_features: str = "labels",
    fallback_features: str = "degree",
    max_degree: int = 64,
    download: bool = False,
) -> TUDataset:
    r"""Load a TU dataset, offline first (see the module docstring), with chosen features.

    Args:
        name (str): The dataset, as the TU collection spells it (``"ENZYMES"``, ``"DD"``).
        root (str): Folder of ``NAME.zip`` archives and ``NAME/`` dataset folders.
        node_features (str, optional): ``"labels"`` (one-hot node labels), ``"attributes"``
            (continuous node attributes) or ``"both"`` (attributes, then labels).
            (default: :obj:`"labels"`)
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
        else:
            dataset.transform = ConstantFeature()
        return dataset
    if node_features == "labels" and num_labels == 0:
        raise ValueError(f"{name} has no node labels; use node_features='attributes'")
    if node_features == "attributes" and num_attrs == 0:
        raise ValueError(f"{name} has no node attributes; use node_features='labels'")
    if node_features == "labels":
        dataset._data.x = dataset._data.x[:, num_attrs:]
    elif node_features == "attributes":
        dataset._data.x = dataset._data.x[:, :num_attrs]
    return dataset
