"""What produced a result: the package's version and git commit, the libraries' versions and
the number of threads torch computed with.

Training is seeded, and on the CPU a run repeats exactly with the same code, the same
libraries and the same number of threads. Change one, even in a way that only adds float sums
in another order, and a few predictions flip early in the run and the rest of it goes
elsewhere.
:func:`provenance` is recorded in every ``results.json`` and in the benchmarks' metadata.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

#: the libraries whose versions change what a run computes (pymetis: DiffPool-Det's clusters)
LIBRARIES = ("torch", "torch_geometric", "lightning", "pymetis")


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(package_dir: str | Path | None = None) -> dict:
    """The version of the package and of the libraries it runs on, where the package is a
    git checkout (an editable install) the commit and whether its files differ from it, and
    torch's intra-op thread count.

    Args:
        package_dir (str or Path, optional): The package's source directory.
            (default: the directory of the installed :mod:`diffpool`)

    Returns:
        dict: ``diffpool`` (the version), ``commit`` (the checkout's ``HEAD``, or
        :obj:`None` where the package's files are not tracked by git, e.g. installed from a
        wheel), ``modified`` (whether tracked files under ``package_dir`` differ from
        ``commit``; :obj:`None` without one), the versions of :data:`LIBRARIES` and
        ``torch_threads`` (:func:`torch.get_num_threads`).
    """
    import torch

    from diffpool import __version__

    if package_dir is None:
        import diffpool

        package_dir = Path(diffpool.__file__).parent
    package_dir = Path(package_dir).resolve()
    commit = modified = None
    # the files must be tracked: a package installed into a virtual environment that lies
    # inside some other git checkout is not that checkout's code
    if _git(package_dir, "ls-files", "--error-unmatch", "--", ".") is not None:
        commit = _git(package_dir, "rev-parse", "HEAD")
        if commit is not None:
            status = _git(package_dir, "status", "--porcelain", "--untracked-files=no", "--", ".")
            modified = None if status is None else bool(status)
    info = {"diffpool": __version__, "commit": commit, "modified": modified}
    info.update({name: _library_version(name) for name in LIBRARIES})
    info["torch_threads"] = torch.get_num_threads()
    return info


def code_label(info: dict | None) -> str | None:
    """A short name of the code in ``info`` (from :func:`provenance`): the commit's first 7
    digits, with ``+modified`` where the files differed from it, else the package version;
    :obj:`None` for a result that recorded no code."""
    if not info:
        return None
    if info.get("commit"):
        return info["commit"][:7] + ("+modified" if info.get("modified") else "")
    return f"diffpool {info.get('diffpool', '?')}"
