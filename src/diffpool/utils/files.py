"""Reading the package's files as data: torch files with ``weights_only=True`` and nothing
more than the globals they need, and data roots that are local folders.

``torch.load(weights_only=True)`` calls the classes of an allowlist, and importing PyG adds
some to it that act on files (``torch_geometric.loader.ClusterData`` loads a path with a
loader that falls back to full unpickling): a file that names one can run code through it.
So the package reads its own files with torch's defaults only plus the globals the caller
names (:func:`only_globals`), and checks a file before a library that might unpickle it reads
it (:func:`check_weights_only`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def only_globals(allowed: Iterable[Any] = ()) -> Iterator[None]:
    """Within this block, weights-only loads take torch's own allowlist and ``allowed``, not
    what libraries added (:func:`torch.serialization.add_safe_globals`)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(list(allowed))
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def load(path: str | os.PathLike | IO[bytes], map_location: Any = None, allowed=()) -> Any:
    """``torch.load(path, weights_only=True)`` with torch's allowlist and ``allowed`` only."""
    with only_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


def check_weights_only(path: str | os.PathLike, allowed: Iterable[Any] = ()) -> None:
    """Refuse a torch file that ``torch.load(weights_only=True)`` with torch's allowlist and
    ``allowed`` would not read, without loading it: for files that a library reads itself
    (PyG falls back to a full unpickling where a weights-only load fails; OGB unpickles
    whenever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set).

    Raises:
        pickle.UnpicklingError: the file names other objects, or is not a torch file.
    """
    try:
        with only_globals(allowed):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, OSError, ValueError) as err:  # truncated, foreign, a folder
        raise pickle.UnpicklingError(f"{path} is not a readable torch file ({err})") from err
    if unsafe:
        raise pickle.UnpicklingError(
            f"{path} names {', '.join(unsafe)}, which a weights-only load refuses (a file is "
            "data: it is not unpickled)"
        )


def pyg_data_classes() -> list[type]:
    """The classes PyG's processed dataset files hold besides tensors."""
    from torch_geometric.data import Data
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import BaseStorage, EdgeStorage, GlobalStorage, NodeStorage

    return [Data, DataEdgeAttr, DataTensorAttr, BaseStorage, GlobalStorage, NodeStorage,
            EdgeStorage]  # fmt: skip


def check_processed(folder: str | os.PathLike) -> None:
    """:func:`check_weights_only` (PyG's data classes allowed) for every torch file of a PyG
    ``processed/`` folder: PyG reads ``pre_transform.pt`` and ``pre_filter.pt`` with a full
    unpickling, ``data.pt`` with one where a weights-only load fails."""
    allowed = pyg_data_classes()
    for path in sorted(Path(folder).glob("*.pt")):
        check_weights_only(path, allowed)


def local_root(root: str | os.PathLike) -> Path:
    """``root`` as a local folder; a URL (which PyG's fsspec would read from) is refused."""
    text = os.fspath(root)
    if "://" in text or "::" in text:
        raise ValueError(f"the data root must be a local folder, got {text!r}")
    return Path(text).expanduser()
