"""RemovableLock: an exclusive lock whose file exists only while it is held."""

from __future__ import annotations

import os
import threading
import time

import pytest
from filelock import FileLock, Timeout

from diffpool.utils.locks import RemovableLock

posix = pytest.mark.skipif(os.name != "posix", reason="the flock implementation")


def test_the_file_is_there_while_held_and_gone_after(tmp_path):
    path = tmp_path / "sub" / "run.lock"
    with RemovableLock(path):
        assert path.exists()
        with pytest.raises(Timeout):  # exclusive, within one process too
            RemovableLock(path).acquire(timeout=0)
        with pytest.raises(Timeout):
            RemovableLock(path).acquire(timeout=0.1)
    assert not path.exists() and list(path.parent.iterdir()) == []
    with pytest.raises(RuntimeError, match="boom"):
        with RemovableLock(path):
            raise RuntimeError("boom")
    assert not path.exists()


@posix
def test_it_excludes_filelock_and_the_other_way_round(tmp_path):
    path = tmp_path / "run.lock"
    with FileLock(str(path)):
        with pytest.raises(Timeout):
            RemovableLock(path).acquire(timeout=0)
    lock = RemovableLock(path)
    lock.acquire(timeout=0)
    with pytest.raises(Timeout):
        FileLock(str(path), timeout=0).acquire()
    lock.release()
    assert not path.exists()


@posix
def test_a_waiter_on_the_removed_file_locks_the_file_the_path_names(tmp_path):
    """A waits on the file that B holds; B removes it and releases: A must then hold the
    lock on the file at the path (a new one), so that a third run is refused, not let in."""
    path = tmp_path / "data.lock"
    first = RemovableLock(path)
    first.acquire()
    waiter, got = RemovableLock(path), threading.Event()

    def wait():
        waiter.acquire()  # opens the held file, blocks
        got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert not got.is_set()
    first.release()
    thread.join(10)
    assert got.is_set() and path.exists()
    held = os.fstat(waiter._fd)
    assert (held.st_dev, held.st_ino) == (path.stat().st_dev, path.stat().st_ino)
    with pytest.raises(Timeout):
        RemovableLock(path).acquire(timeout=0)
    waiter.release()
    assert not path.exists()


@posix
def test_without_flock_it_is_filelocks_lock(tmp_path, monkeypatch):
    """A file system without flock (some network mounts): filelock's own lock instead."""
    import errno
    import fcntl
    from types import SimpleNamespace

    from diffpool.utils import locks

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    stub = SimpleNamespace(flock=no_flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB)
    monkeypatch.setattr(locks, "fcntl", stub)  # ours only: filelock keeps its flock
    fallback = []
    monkeypatch.setattr(locks, "FileLock", lambda *a, **k: fallback.append(a) or FileLock(*a, **k))
    with RemovableLock(tmp_path / "run.lock"):
        assert fallback == [(str(tmp_path / "run.lock"),)]


@posix
def test_release_removes_only_the_file_it_holds(tmp_path):
    """A failed run's new folder goes while its lock is held: a run that locks the new file
    under that name keeps it when the first releases (else a third would lock beside it)."""
    import shutil

    folder = tmp_path / "run"
    first = RemovableLock(folder / "run.lock")
    first.acquire(timeout=0)
    shutil.rmtree(folder)
    second = RemovableLock(folder / "run.lock")
    second.acquire(timeout=0)
    first.release()
    assert (folder / "run.lock").exists()
    with pytest.raises(Timeout):
        RemovableLock(folder / "run.lock").acquire(timeout=0)
    second.release()
    assert not (folder / "run.lock").exists()


@posix
def test_a_link_as_the_lock_file_is_refused(tmp_path):
    (tmp_path / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="is a link"):
        RemovableLock(tmp_path / "lock").acquire(timeout=0)
    assert not (tmp_path / "elsewhere").exists()
