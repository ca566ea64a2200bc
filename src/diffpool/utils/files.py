"""Reading the package's files as data: torch files with ``weights_only=True`` and nothing
more than the globals they need, and data roots that are local folders.

``torch.load(weights_only=True)`` calls the classes of an allowlist, and importing PyG adds
some to it that act on files (``torch_geometric.loader.ClusterData`` loads a path with a
loader that falls back to full unpickling): a file that names one can run code through it.
So the package reads its own files with torch's defaults only plus the globals the caller
names (:func:`only_globals`), and checks a file before a library that might unpickle it reads
it (:func:`check_weights_only`).

Writing them: :func:`write_atomically` (and :func:`save_atomically` for ``torch.save``,
:func:`save_figure` for matplotlib, whose labels :func:`plain_text` keeps as they are) writes
a file whole or not at all, into a temporary file created exclusively under a random name
beside it, and never through a symbolic link (a run directory copied from elsewhere may hold
links to files outside it).
"""

from __future__ import annotations

import contextlib
import errno
import io
import locale
import logging
import os
import pickle
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
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


def checkpoint_entry(path: str | os.PathLike, key: str) -> Any:
    """One entry of a torch file holding a mapping (a checkpoint), :obj:`None` where it has
    none: read as :func:`load` reads, its tensors memory-mapped rather than read (a run's
    checks read an entry of a checkpoint that Lightning or the module then loads whole). A
    file of torch's legacy format, which cannot be memory-mapped, is read whole, as
    :func:`load` reads it (the module loaded from it: its checks must read it too)."""
    with open(path, "rb") as handle:  # torch's own test of its zip format
        mmap = handle.read(4) == b"PK\x03\x04"
    with only_globals():
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return stored.get(key) if isinstance(stored, dict) else None


def check_weights_only(path: str | os.PathLike, allowed: Iterable[Any] = ()) -> None:
    """Refuse a torch file that ``torch.load(weights_only=True)`` with torch's allowlist and
    ``allowed`` would not read, without loading it: for files that a library reads itself
    (PyG falls back to a full unpickling where a weights-only load fails; OGB unpickles
    whenever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set).

    Raises:
        pickle.UnpicklingError: the file names other objects, or is not a torch file (nor a
            regular file: a pipe, a device, a folder).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise pickle.UnpicklingError(f"{path} is not a readable torch file ({err})") from err
    if not stat.S_ISREG(mode):  # a pipe would be waited on for ever, a device read for ever
        raise pickle.UnpicklingError(
            f"{path} is not a readable torch file (not a regular file: {_kind(mode)})"
        )
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


class UnsafeDestinationError(FileExistsError, ValueError):
    """A file to write is a symbolic link: it is not written through (nor replaced)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(
            f"{os.fspath(path)} is a symbolic link: not written through (remove it first)"
        )
        self.path = os.fspath(path)


def check_destination(path: str | os.PathLike) -> None:
    """Refuse to write ``path`` where it is a symbolic link (dangling or not).

    Raises:
        UnsafeDestinationError: ``path`` is a symbolic link.
    """
    if os.path.islink(path):
        raise UnsafeDestinationError(path)


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} exists: nothing was overwritten")


def _umask() -> int:
    """The process's umask (without changing it where ``/proc`` says it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: what ``os.link`` fails with on a file system without hard links
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _write_atomically(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], overwrite: bool
) -> Path:
    """Write a file with ``write(handle)`` into a temporary file beside ``path`` (created
    exclusively, random name) and move it into place once whole and on disk; the temporary
    file is removed on failure. ``overwrite``: replace an existing file (never a link);
    else an existing ``path`` (a link included) is an error and is left as it was."""
    path = Path(path)
    check_destination(path)
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    # created exclusively (O_EXCL, a random name); closed below, removed on failure
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, delete=False
    )
    tmp, reserved = handle.name, False
    try:
        with handle:
            if hasattr(os, "fchmod"):  # as open() creates files (here 0o600); not Windows
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            check_destination(path)  # a rename never follows a link; this says why
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails where anything is there, a link too
            except FileExistsError:
                raise _exists(path) from None
            except OSError as err:  # no hard links here: reserve the name, rename over it
                if err.errno not in _NO_HARD_LINKS:
                    raise
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                os.close(os.open(path, flags))
                reserved = True
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if reserved:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return path


#: the end of a temporary file's name (``.NAME.<random>.diffpool-tmp``, beside the file it
#: becomes): a name no other program gives, so that :func:`remove_leftovers` removes ours only
TEMPORARY_SUFFIX = ".diffpool-tmp"


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writes into ``folder`` cut short (a ``kill -9``) left
    behind: ``.NAME.<random>.diffpool-tmp``. Call it while nothing writes there (under the
    run lock)."""
    removed = []
    if Path(folder).is_symlink():  # not through a link (a run refuses it before it writes)
        return removed
    for path in Path(folder).glob(f".*.*{TEMPORARY_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def write_atomically(
    path: str | os.PathLike,
    data: bytes | str,
    overwrite: bool = True,
    encoding: str | None = None,
) -> Path:
    """Write ``data`` to ``path`` whole or not at all, never through a symbolic link: into a
    temporary file created exclusively beside it, renamed into place once on disk (removed
    if the write fails, e.g. on a full disk). Text is encoded as ``open()`` would (the
    locale's encoding) unless ``encoding`` is given.

    Args:
        overwrite (bool, optional): Replace an existing file; with :obj:`False` an existing
            ``path`` is an error and is left as it was. (default: :obj:`True`)

    Raises:
        UnsafeDestinationError: ``path`` is a symbolic link.
        FileExistsError: ``path`` exists and ``overwrite`` is :obj:`False`.
    """
    if isinstance(data, str):
        data = data.encode(encoding or locale.getpreferredencoding(False))
    return _write_atomically(path, lambda handle: handle.write(data), overwrite)


def save_atomically(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save(obj, path)`` as :func:`write_atomically` writes."""
    return _write_atomically(path, lambda handle: torch.save(obj, handle), overwrite)


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Within this block (or the function it decorates), matplotlib draws every text as it
    is: no mathtext (``$...$``), no LaTeX. For figures whose labels come from files: the
    texts keep this setting when drawn later, e.g. by :func:`save_figure`."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def save_figure(fig: Any, path: str | os.PathLike, overwrite: bool = True, **kwargs: Any) -> Path:
    """``fig.savefig(path, **kwargs)`` (a matplotlib figure, in the format of the path's
    suffix) as :func:`write_atomically` writes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix[1:].lower() or None, **kwargs)
    return write_atomically(path, buffer.getvalue(), overwrite=overwrite)


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip
    return next((word for test, word in kinds if test(mode)), "not a plain file")


def _is_junction(path: Path) -> bool:
    """A Windows junction (a link to a folder that :meth:`Path.is_symlink` does not report)."""
    isjunction = getattr(os.path, "isjunction", None)  # Python 3.12+
    return bool(isjunction and isjunction(path))


class NoFollowFileHandler(logging.FileHandler):
    """:class:`logging.FileHandler` that appends to its file only where it is no symbolic
    link (Hydra's ``train.log``, opened before the job runs: in a run directory copied from
    elsewhere it may point outside it)."""

    def _open(self):
        check_destination(self.baseFilename)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        handle = os.open(self.baseFilename, flags, 0o666)
        return open(handle, self.mode, encoding=self.encoding, errors=self.errors)


def refuse_links(*paths: str | os.PathLike, owner: str = "a dataset") -> None:
    """Refuse a path that is a symbolic link (or a Windows junction); one that does not exist
    passes. For the folders of a dataset or a run (``owner``), which the package and the
    libraries it calls read, write into and remove: through a link that would happen wherever
    it points, and a dataset's files (an archive, a tarball) or a run directory copied from
    elsewhere can hold links.

    Raises:
        ValueError: the first path that is a link, named with its target.
    """
    for path in map(Path, paths):
        if path.is_symlink() or _is_junction(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise ValueError(
                f"{path} is a link (to {target}): {owner}'s folders and files must be real "
                "ones, as files are written and removed in them; replace the link with a "
                "copy of what it points to"
            )


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``: a device
    (``/dev/zero``) would be read for ever, a pipe waited on for ever, a huge file fill the
    memory.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file, or more than ``max_bytes``; the message names the
            file (as ``what``) and the cap.
    """
    path = Path(path)
    cap = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"

    def check(info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(
                f"{what} {path} is not a regular file ({_kind(info.st_mode)}): only a regular "
                f"file of at most {cap} is read"
            )
        if info.st_size > max_bytes:
            raise ValueError(
                f"{what} {path} has {info.st_size} bytes, more than the {cap} read at most"
            )

    check(os.stat(path))  # before opening it: opening a pipe waits for a writer
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    with open(os.open(path, flags), "rb") as handle:  # replaced meanwhile: checked again
        check(os.fstat(handle.fileno()))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{what} {path} grew past the {cap} read at most while it was read")
    return data
