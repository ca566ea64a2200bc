"""diffpool.utils.provenance: which code produced a result."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import diffpool
from diffpool.utils.provenance import code_label, provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@needs_git
def test_a_checkout_gives_its_commit_and_whether_the_package_differs(tmp_path):
    package = tmp_path / "repo" / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (tmp_path / "repo" / "notes.md").write_text("results\n")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", ".")
    _git(tmp_path / "repo", "commit", "-q", "-m", "first")
    head = _git(tmp_path / "repo", "rev-parse", "HEAD")

    info = provenance(package)
    assert info["commit"] == head and info["modified"] is False
    assert code_label(info) == head[:7]
    # files outside the package (results a sweep writes) do not count
    (tmp_path / "repo" / "notes.md").write_text("more results\n")
    assert provenance(package)["modified"] is False
    (package / "__init__.py").write_text("x = 2\n")
    info = provenance(package)
    assert info["commit"] == head and info["modified"] is True
    assert code_label(info) == head[:7] + "+modified"


@needs_git
def test_untracked_files_are_not_that_checkouts_code(tmp_path):
    # e.g. a package installed into a virtual environment inside some other checkout
    (tmp_path / "tracked.txt").write_text("x\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "tracked.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    installed = tmp_path / ".venv" / "site-packages" / "pkg"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    info = provenance(installed)
    assert info["commit"] is None and info["modified"] is None
    assert code_label(info) == f"diffpool {diffpool.__version__}"


def test_outside_any_checkout_the_versions_remain(tmp_path):
    info = provenance(tmp_path)
    assert info["commit"] is None and info["modified"] is None
    assert info["diffpool"] == diffpool.__version__
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert set(info) == {
        "diffpool",
        "commit",
        "modified",
        "torch",
        "torch_geometric",
        "lightning",
        "pymetis",
        "torch_threads",
    }


def test_a_result_without_a_record_has_no_label():
    assert code_label(None) is None and code_label({}) is None
