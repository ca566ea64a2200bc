"""Writing the package's files (diffpool.utils.files): whole or not at all, into a temporary
file created exclusively under a random name, never through a symbolic link."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from diffpool.utils import files
from diffpool.utils.files import UnsafeDestinationError

VICTIM = b"# someone else's file\nexport IMPORTANT=1\n"


def _victim(tmp_path):
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(VICTIM)
    return victim


def test_a_file_is_replaced_whole_with_the_permissions_open_gives(tmp_path):
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    files.write_atomically(path, "first")
    files.write_atomically(path, "second ± é")
    assert path.read_text() == "second ± é"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    reference = tmp_path / "run" / "opened"
    reference.write_text("")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


@pytest.mark.parametrize("name", ["results.json.tmp", "results.json.part", ".results.json.tmp"])
def test_a_link_where_a_temporary_file_might_be_is_not_followed(tmp_path, name):
    """The temporary file had a predictable name (``<name>.tmp``): a link planted there was
    written through. It is created exclusively under a random name now."""
    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(victim)
    files.write_atomically(run / "results.json", "{}\n")
    assert victim.read_bytes() == VICTIM
    assert (run / "results.json").read_text() == "{}\n"
    assert not (run / "results.json").is_symlink()


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize("overwrite", [True, False])
def test_a_link_at_the_destination_is_refused(tmp_path, dangling, overwrite):
    victim = tmp_path / "outside" / "new-file" if dangling else _victim(tmp_path)
    victim.parent.mkdir(exist_ok=True)
    link = tmp_path / "report.md"
    link.symlink_to(victim)
    with pytest.raises(UnsafeDestinationError, match="report.md is a symbolic link") as err:
        files.write_atomically(link, "x\n", overwrite=overwrite)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileExistsError)
    assert not victim.exists() if dangling else victim.read_bytes() == VICTIM
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == [
        "outside",
        "report.md",
    ]
    with pytest.raises(UnsafeDestinationError):
        files.save_atomically({"a": torch.ones(2)}, link, overwrite=overwrite)


def test_without_overwrite_an_existing_file_is_left_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "predictions.csv"
    files.write_atomically(path, "mine\n", overwrite=False)
    with pytest.raises(FileExistsError, match="exists: nothing was overwritten"):
        files.write_atomically(path, "theirs\n", overwrite=False)
    assert path.read_text() == "mine\n"

    # a file system without hard links: the name is reserved exclusively, then replaced
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    other = tmp_path / "other.pt"
    files.save_atomically({"x": torch.arange(3)}, other, overwrite=False)
    assert torch.load(other, weights_only=True)["x"].tolist() == [0, 1, 2]
    with pytest.raises(FileExistsError):
        files.save_atomically({}, other, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "predictions.csv"]


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_failed_write_leaves_neither_a_temporary_file_nor_half_a_file(
    tmp_path, monkeypatch, overwrite
):
    path = tmp_path / "last.ckpt"
    if overwrite:
        files.save_atomically({"epoch": 0}, path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    target = path if overwrite else tmp_path / "new.ckpt"
    with pytest.raises(OSError, match="No space left"):
        files.save_atomically({"epoch": 1}, target, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["last.ckpt"] if overwrite else [])
    if overwrite:
        assert torch.load(path, weights_only=True) == {"epoch": 0}


def test_a_figure_is_saved_in_the_format_of_its_suffix_with_its_labels_as_text(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with files.plain_text():
        fig, ax = plt.subplots()
        ax.set_title(r"$\undefined$ \x")  # mathtext would fail to parse it when drawn
    try:
        files.save_figure(fig, tmp_path / "a.png")
        files.save_figure(fig, tmp_path / "a.svg")
        (tmp_path / "b.png").symlink_to(tmp_path / "elsewhere.png")
        with pytest.raises(UnsafeDestinationError):
            files.save_figure(fig, tmp_path / "b.png")
    finally:
        plt.close(fig)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()
    assert not (tmp_path / "elsewhere.png").exists()


def test_the_log_handler_appends_to_a_file_and_never_through_a_link(tmp_path):
    """Hydra opens a job's train.log before the job runs (conf/hydra/default.yaml names this
    handler): in a run directory copied from elsewhere it may be a link to any file."""
    import logging

    from hydra import compose, initialize_config_module

    from diffpool.utils.files import NoFollowFileHandler, UnsafeDestinationError

    log = tmp_path / "train.log"
    log.write_text("earlier\n")
    handler = NoFollowFileHandler(log)
    handler.emit(logging.makeLogRecord({"msg": "appended"}))
    handler.close()
    assert log.read_text() == "earlier\nappended\n"
    victim, linked = tmp_path / "victim", tmp_path / "linked.log"
    linked.symlink_to(victim)
    with pytest.raises(UnsafeDestinationError, match="linked.log is a symbolic link"):
        NoFollowFileHandler(linked)
    assert not victim.exists()
    with initialize_config_module("diffpool.conf", version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert (
        cfg.hydra.job_logging.handlers.file["class"] == "diffpool.utils.files.NoFollowFileHandler"
    )


@pytest.mark.parametrize("zipped", [True, False])
def test_checkpoint_entry_reads_both_of_torchs_formats(tmp_path, zipped):
    """A checkpoint re-saved in torch's legacy format loads (files.load): the checks that read
    one of its entries (the split a checkpoint was trained on) read it too, not fail open."""
    path = tmp_path / "model.ckpt"
    stored = {"datamodule_hyper_parameters": {"fold": 3}, "state_dict": {"w": torch.ones(2)}}
    torch.save(stored, path, _use_new_zipfile_serialization=zipped)
    assert files.load(path)["datamodule_hyper_parameters"] == {"fold": 3}
    assert files.checkpoint_entry(path, "datamodule_hyper_parameters") == {"fold": 3}
    assert files.checkpoint_entry(path, "epoch") is None
