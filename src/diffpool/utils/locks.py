"""Exclusive locks that leave no file behind: the lock file exists only while the lock is held.

A run's ``run.lock`` and a dataset's ``.NAME.lock`` say that something is using a folder;
once it is done, nothing of them should stay. ``filelock`` keeps its lock files on POSIX (a
waiter may hold the old file open, and removing it would let a newcomer lock a new file
meanwhile). :class:`RemovableLock` removes the file while still holding it, and a process that
then wins the lock on the removed file sees that it no longer is the file at that path and
locks the new one instead: whoever holds the lock holds it on the file the path names.

On POSIX it locks with :func:`fcntl.flock` (as ``filelock`` does, so the two exclude each
other); elsewhere, and on a file system without ``flock``, it is ``filelock.FileLock`` (which
on Windows removes its file on release).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: seconds between two tries while waiting with a timeout
POLL = 0.05

#: what ``flock`` raises on a file system that does not support it
NO_FLOCK = {
    getattr(errno, n) for n in ("ENOSYS", "ENOLCK", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, n)
}


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file that ``path`` names."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _acquire(path: Path, timeout: float) -> int:
    """An open file descriptor of ``path`` that holds the lock; :class:`filelock.Timeout`
    where the lock is not free within ``timeout`` seconds (``0``: at once; ``< 0``: wait)."""
    deadline = None if timeout < 0 else time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link planted where the lock file goes
                raise ValueError(f"the lock file {path} is a link: remove it") from None
            raise
        try:
            if deadline is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise Timeout(str(path)) from None
                        time.sleep(POLL)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # its holder removed it on release: lock the file the path names now


class RemovableLock:
    """An exclusive lock on the file ``path`` (made, with its folder, when acquired) that
    removes the file on release; a context manager that waits as long as it takes.

    Args:
        path (str): The lock file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._fallback: FileLock | None = None

    def acquire(self, timeout: float = -1) -> None:
        """Take the lock within ``timeout`` seconds (``0``: try once; negative: wait).

        Raises:
            filelock.Timeout: the lock was not free within ``timeout``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            try:
                self._fd = _acquire(self.path, timeout)
                return
            except OSError as err:
                if err.errno not in NO_FLOCK:
                    raise
        self._fallback = FileLock(str(self.path), timeout=timeout)
        self._fallback.acquire()

    def release(self) -> None:
        """Remove the file, then release the lock (a waiter on the removed file then locks
        the file the path names)."""
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
        if self._fd is None:
            return
        try:
            # only the file this lock holds: another run may lock a new one under that name
            # once this one was removed (a failed run's new folder is removed while held)
            if _same_file(self._fd, self.path):
                with contextlib.suppress(OSError):  # a read-only folder
                    self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RemovableLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
