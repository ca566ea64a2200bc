"""TU graph-classification benchmarks, offline first.

:func:`load_tu` finds a dataset's raw files, in this order:

1. ``root/NAME/raw/`` already holds the official text files;
2. ``root/NAME.zip`` is the official archive (it is extracted into ``root/NAME/raw/``);
3. the package ships the archive (ENZYMES, PROTEINS and MUTAG, :data:`BUNDLED`);
4. ``download=True``: the official archive from PyG's source of the TU collection
   (:attr:`TUDataset.url <torch_geometric.datasets.TUDataset.url>`), kept as ``root/NAME.zip``.

Names are matched without regard to case (``nci1`` is ``NCI1``) against :data:`KNOWN`, the
bundled datasets and the offline copies in ``root``. Then it picks the node features
(:data:`NODE_FEATURES`; ``"auto"``: whatever the dataset has, logged) and, for datasets with
neither node labels nor attributes (the social ones), gives every node its degree or a
constant.

The files are checked before PyG reads them (:func:`check_raw`), a ``processed/`` folder PyG
cannot read is rebuilt from ``raw/``, and the graphs without edges at the end of a dataset,
which PyG's reader drops, are kept. ``root/NAME``, its ``raw/`` and ``processed/`` must be
real folders, not links (:func:`_check_folders`): files are written and removed in them.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch_geometric.data import Data, download_url
from torch_geometric.datasets import TUDataset
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import degree

from diffpool.datasets.names import BUNDLED, KNOWN
from diffpool.datasets.source import DataUnavailableError
from diffpool.utils.files import check_processed, local_root, refuse_links
from diffpool.utils.locks import RemovableLock

log = logging.getLogger(__name__)

#: which columns of the TU node features to use (``"auto"``: both where the dataset has both,
#: else the one it has)
NODE_FEATURES = ("auto", "labels", "attributes", "both")

#: features for datasets that have no node labels or attributes
FALLBACK_FEATURES = ("degree", "constant")

_REQUIRED = ("A", "graph_indicator", "graph_labels")

#: a dataset name: one word (a file name in ``root``, never a path)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _raw_complete(raw_dir: Path, name: str) -> bool:
    return all((raw_dir / f"{name}_{part}.txt").exists() for part in _REQUIRED)


def _members(zf: zipfile.ZipFile, archive, name: str) -> dict[str, zipfile.ZipInfo]:
    """The dataset's files in the archive by file name: ``NAME_*`` and ``README.txt`` in its
    folder ``NAME/`` (the official layout, which PyG's download expects too), nothing from
    elsewhere. Two ``NAME_*`` files of the same name are an error: which one is meant cannot
    be told."""
    folder, files, seen = PurePosixPath(name), {}, {}
    for member in zf.infolist():
        path = PurePosixPath(member.filename)  # NAME//NAME_A.txt (official) is NAME/NAME_A.txt
        if member.is_dir() or not (path.name.startswith(f"{name}_") or path.name == "README.txt"):
            continue
        if path.name in seen and path.name != "README.txt":
            raise ValueError(
                f"{archive} has two {path.name}: {seen[path.name].filename} and "
                f"{member.filename}; keep only the files in {name}/, as the official archive "
                "has them"
            )
        seen[path.name] = member
        if path.parent == folder:
            files[path.name] = member
    return files


def _extract(archive, name: str, raw_dir: Path) -> None:
    """Extract the official ``NAME.zip`` (files under ``NAME/``: :func:`_members`) into
    ``raw_dir``, whole or not at all: into a temporary folder first (every member's CRC is
    checked as it is read), moved into place once complete, so that a corrupt archive never
    leaves a partial ``raw/``."""
    partial = raw_dir.parent / f".{raw_dir.name}.partial-{os.getpid()}"
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _members(zf, archive, name)
            missing = [p for p in _REQUIRED if f"{name}_{p}.txt" not in files]
            if missing:
                raise ValueError(
                    f"{archive} is not the TU archive of {name}: its folder {name}/ lacks "
                    f"{', '.join(f'{name}_{p}.txt' for p in missing)} (the official archive "
                    f"holds {name}/{name}_A.txt, {name}/{name}_graph_indicator.txt, ...)"
                )
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for filename, member in files.items():
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


def _damaged(path: Path, problem: str) -> ValueError:
    """The error for a TU text file that is wrong: it names the file and the fix."""
    return ValueError(
        f"{path} {problem}; remove {path.parent} (it is extracted again from the archive) or "
        "restore the file"
    )


def _graph_ids(path: Path) -> np.ndarray:
    """The graph of each node in the graph indicator ``path``, checked as PyG's reader
    assumes them: graphs 1, 2, 3, ... in order and without gaps, the nodes of each graph on
    consecutive lines (else edges would move between graphs)."""
    try:
        ids = np.array(path.read_bytes().split(), dtype=np.int64)
    except ValueError as err:
        raise _damaged(path, f"holds something other than graph numbers ({err})") from None
    if ids.size == 0:
        raise _damaged(path, "is empty")
    if ids[0] != 1:
        raise _damaged(path, f"starts with graph {ids[0]}, not 1")
    steps = np.diff(ids)
    wrong = np.flatnonzero((steps < 0) | (steps > 1))
    if wrong.size:
        line = int(wrong[0]) + 1  # 0-based: the first line out of order
        raise _damaged(
            path,
            f"has graph {ids[line]} after graph {ids[line - 1]} at line {line + 1}: the graphs "
            "must be numbered 1, 2, 3, ... without gaps, the nodes of each on consecutive lines",
        )
    return ids


def check_raw(raw_dir: Path, name: str) -> None:
    """The TU text files of ``raw_dir`` are sound and agree with each other: none is empty,
    the graph indicator numbers the graphs in order (:func:`_graph_ids`), one graph label per
    graph of the graph indicator, one node label (and attribute row) per node, one edge label
    (and attribute row) per edge; else an error that names the file that is wrong."""

    def path(part: str) -> Path:
        return raw_dir / f"{name}_{part}.txt"

    for file in sorted(raw_dir.glob(f"{name}_*.txt")):
        if file.stat().st_size == 0:
            raise _damaged(file, "is empty")
    graph_ids = _graph_ids(path("graph_indicator"))
    num_nodes, num_graphs = graph_ids.size, int(graph_ids[-1])
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
                raise _damaged(
                    path(part),
                    f"has {lines} lines for {count} {what}: the dataset's files do not agree",
                )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock on every platform: parallel jobs of a sweep prepare a dataset
    once. The lock file is there while the dataset is being prepared, and removed after
    (:class:`~diffpool.utils.locks.RemovableLock`). A link in its place is refused: the lock
    would open (and make) the file it points to."""
    refuse_links(path)
    with RemovableLock(path):
        yield


def _check_folders(root: Path, name: str) -> None:
    """Refuse ``root/NAME``, ``root/NAME/raw`` or ``root/NAME/processed`` where it is a link
    (a dataset folder copied with its links, a tarball): ``raw/`` and ``processed/`` are
    removed and written, and PyG reads ``processed/`` (through a link, files nobody checked
    where they lie, and the writes and removals would land wherever it points)."""
    folder = root / name
    refuse_links(folder, folder / "raw", folder / "processed")


def _remove(path: Path) -> None:
    """Remove the folder (or file) ``path``, or fail: what is left there would be read."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        raise OSError(
            err.errno, f"could not remove {path} ({err}): remove it yourself", str(path)
        ) from err
    if os.path.lexists(path):
        raise OSError(f"could not remove {path}: remove it yourself")


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
    suggests the close names (each once). A name that is not one plain word (a path: ``/``,
    ``..``) is refused whatever ``download`` says."""
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a dataset name: a TU dataset's name is one word of letters, digits, "
            "'_' and '-' (NCI1, IMDB-BINARY, PTC_MR); give the folder of the datasets as root "
            "(diffpool-train: data.root=...)"
        )
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


def _download(name: str, archive: Path) -> None:
    """Download the official ``NAME.zip`` from PyG's source of the TU collection to
    ``archive``, whole or not at all: into a temporary folder, then moved into place. A failed
    download (no network, no such dataset, a page that is no zip archive) writes nothing and
    is an error that says where to put the files."""
    url = f"{TUDataset.url}/{name}.zip"
    fix = (
        f"put the official {name}.zip in {archive.parent} (or its text files in "
        f"{archive.parent / name / 'raw'}), or run where the internet is reachable"
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fetched = download_url(url, tmp, log=False)
        except Exception as err:  # whatever the network gives: the cause is in the message
            raise DataUnavailableError(
                f"could not download {url} ({type(err).__name__}: {err}): {fix}"
            ) from None
        if not zipfile.is_zipfile(fetched):
            raise DataUnavailableError(f"{url} gave no zip archive (a proxy's page?): {fix}")
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
        try:
            shutil.copyfile(fetched, partial)
            partial.replace(archive)
        finally:
            partial.unlink(missing_ok=True)


def _fetch(name: str, root: Path, download: bool) -> None:
    """Make sure there is a copy of the dataset to read (``root/NAME/raw/``, ``root/NAME.zip``
    or a bundled archive), downloading ``NAME.zip`` into ``root`` where allowed. Writes nothing
    when it fails: call it before the lock file is made."""
    check_name(name, root, download)
    _check_folders(root, name)
    raw_dir, archive = root / name / "raw", root / f"{name}.zip"
    if _raw_complete(raw_dir, name) or archive.exists() or name in BUNDLED:
        return
    if not download:
        raise FileNotFoundError(
            f"TU dataset {name!r} is not available offline: put the official {name}.zip in "
            f"{root} (or its text files in {raw_dir}), or pass download=True"
        )
    _download(name, archive)


def _unpack(name: str, root: Path) -> None:
    """Extract ``root/NAME.zip``, else the bundled archive, into ``root/NAME/raw/`` unless it
    is complete. ``NAME.zip`` must be a regular file (a pipe would be waited on for ever)."""
    _check_folders(root, name)
    raw_dir, archive = root / name / "raw", root / f"{name}.zip"
    if _raw_complete(raw_dir, name):
        return
    if archive.exists():
        if not archive.is_file():
            raise ValueError(f"{archive} is not a regular file; replace it with the official one")
        _extract(archive, name, raw_dir)
        return
    with resources.as_file(resources.files(__package__) / "archives" / f"{name}.zip") as zp:
        _extract(zp, name, raw_dir)


def prepare_raw(name: str, root: str | os.PathLike, download: bool = False) -> Path:
    """Make sure ``root/NAME/raw/`` holds the dataset's files; returns ``root``.

    Raises:
        ValueError: a name that is not one, an unknown name with no offline files, or a
            corrupt archive.
        FileNotFoundError: no offline copy and ``download=False``.
        DataUnavailableError: no offline copy and the download failed.
    """
    root = Path(root).expanduser()
    _fetch(name, root, download)
    _unpack(name, root)
    return root


def _keep_every_graph(dataset: TUDataset) -> TUDataset:
    """PyG's TU reader counts the graphs of its edge slices, which miss the graphs without
    edges at the end of a dataset (188 graphs for 189 labels where the last has one node):
    they get their empty edge slices back."""
    slices = dataset.slices
    size = max(s.numel() for s in slices.values())  # the node and label slices have them all
    for key in ("edge_index", "edge_attr"):
        short = slices.get(key)
        if short is not None and short.numel() < size:
            slices[key] = torch.cat([short, short[-1:].expand(size - short.numel())])
    return dataset


def _read_processed(root: Path, name: str) -> TUDataset | None:
    """The dataset from ``root/NAME/processed/``; :obj:`None` where there is none, or it cannot
    be read (cut short by a full disk, or another PyG version's): then it is removed, to be
    rebuilt from ``raw/``, with a warning. Its files are checked whenever it is there (PyG
    unpickles ``pre_transform.pt`` and ``pre_filter.pt`` before it processes), and a
    ``processed/`` without ``data.pt`` is removed too; one that cannot be removed is an
    error (PyG would read what is left)."""
    _check_folders(root, name)
    processed = root / name / "processed"
    if not os.path.lexists(processed):
        return None
    try:
        check_processed(processed)  # PyG would unpickle what a weights-only load refuses
        if (processed / "data.pt").is_file():  # TUDataset.processed_file_names
            return TUDataset(str(root), name, use_node_attr=True)
    except Exception as err:  # whatever torch.load makes of it: raw/ is at hand
        log.warning(
            "could not read %s (%s: %s): processing %s again",
            processed, type(err).__name__, err, root / name / "raw",
        )  # fmt: skip
    _remove(processed)
    return None


def _process(root: Path, name: str) -> TUDataset:
    """The dataset processed by PyG from ``root/NAME/raw/``, checked first (:func:`check_raw`)."""
    raw_dir = root / name / "raw"
    check_raw(raw_dir, name)
    try:
        return TUDataset(str(root), name, use_node_attr=True)
    except (ValueError, IndexError, RuntimeError) as err:
        raise ValueError(
            f"could not read the TU files of {name} in {raw_dir} ({err}); remove that folder to "
            "extract the archive again"
        ) from err


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
        TUDataset: its ``transform`` gives ``x`` as asked (the chosen columns, or the
        fallback features); compose a transform of your own with it.
    """
    if node_features not in NODE_FEATURES:
        raise ValueError(f"node_features must be one of {NODE_FEATURES}, got {node_features!r}")
    if fallback_features not in FALLBACK_FEATURES:
        raise ValueError(
            f"fallback_features must be one of {FALLBACK_FEATURES}, got {fallback_features!r}"
        )
    root = local_root(root)
    asked, name = name, resolve_name(name, root)
    if name != asked:
        log.info("TU dataset %r is %s", asked, name)
    _fetch(name, root, download)  # before the lock file and folders are made
    with _locked(root / f".{name}.lock"):
        _unpack(name, root)
        dataset = _read_processed(root, name)
        dataset = _keep_every_graph(dataset if dataset is not None else _process(root, name))
    num_attrs, num_labels = dataset.num_node_attributes, dataset.num_node_labels
    if num_attrs + num_labels == 0:
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
        dataset.transform = NodeColumns(num_attrs, None)
    elif node_features == "attributes":
        dataset.transform = NodeColumns(0, num_attrs)
    return dataset


class NodeColumns(BaseTransform):
    """The columns ``start:stop`` of ``x``: a TU dataset's node attributes or its one-hot node
    labels, which PyG stores side by side (attributes first)."""

    def __init__(self, start: int, stop: int | None):
        self.start, self.stop = start, stop

    def forward(self, data: Data) -> Data:
        data.x = data.x[:, self.start : self.stop]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.start}, {self.stop})"
