"""The console scripts create their outputs: none is written through a symbolic link in the
run or sweep directory (which may have been copied from elsewhere), and the report keeps the
values of the runs' files on one line each."""

from __future__ import annotations

import json
import shutil

import pytest

from diffpool.cli import predict, report, viz
from diffpool.utils.extras import missing
from helpers import trained_mutag_run

VICTIM = "export IMPORTANT=1\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_mutag_run(tmp_path_factory.mktemp("outputs"), "run", "model.num_levels=2")


def _copy(run_dir, dest):
    """A copy of the run whose results.json names the copy's own best checkpoint."""
    shutil.copytree(run_dir, dest)
    result = json.loads((dest / "results.json").read_text())
    name = result["fair"]["checkpoint"].rsplit("/", 1)[-1]
    result["fair"]["checkpoint"] = str(dest / "checkpoints" / name)
    (dest / "results.json").write_text(json.dumps(result))
    return dest


def test_predict_creates_no_file_through_a_dangling_link(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path / "run")
    target = tmp_path / "outside_new_file"
    (run / "predictions-test.csv").symlink_to(target)
    assert predict.main([f"run={run}"]) == 2
    assert "predictions-test.csv exists: choose another out=" in capsys.readouterr().err
    assert not target.exists()
    (run / "predictions-test.csv").unlink()
    (run / "predictions-test.csv.level1.pt").symlink_to(target)  # only level0 is checked first
    assert predict.main([f"run={run}", "assignments=true"]) == 2
    assert "level1.pt exists" in capsys.readouterr().err
    assert not target.exists() and not (run / "predictions-test.csv.level0.pt").exists()


@pytest.mark.skipif(bool(missing("viz")), reason="needs the viz extra")
def test_viz_writes_through_no_link(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path / "run")
    victim = tmp_path / "victim_viz"
    victim.write_text("mine")
    (run / "pooling-0.png").symlink_to(victim)
    assert viz.main([str(run)]) == 2
    assert "pooling-0.png is a symbolic link: not written through" in capsys.readouterr().err
    assert victim.read_text() == "mine"
    assert viz.main([str(run), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep(run_dir, tmp_path, *variants: str):
    sweep = tmp_path / "sweep"
    for i, variant in enumerate(variants):
        job = _copy(run_dir, sweep / f"job{i}")
        result = json.loads((job / "results.json").read_text())
        result["config"]["model"]["variant"] = variant
        (job / "results.json").write_text(json.dumps(result))
    return sweep


@pytest.mark.parametrize("dangling", [False, True])
def test_the_report_writes_through_no_link(run_dir, tmp_path, capsys, dangling):
    """The reviewer's routes: report.md a link to ~/.bashrc, or a dangling one to a
    ``site-packages/*.pth`` (whose ``import`` lines Python runs), and a config value with a
    newline and a command."""
    injected = "x\nimport os; os.system('touch PWNED')\n"
    sweep = _sweep(run_dir, tmp_path, "diffpool", injected)
    victim = tmp_path / "site" / "zz_report.pth"
    victim.parent.mkdir()
    if not dangling:
        victim.write_text(VICTIM)
    (sweep / "report.md").symlink_to(victim)
    assert report.main([str(sweep)]) == 2
    assert "report.md is a symbolic link: not written through" in capsys.readouterr().err
    assert not victim.exists() if dangling else victim.read_text() == VICTIM
    (sweep / "report.md").unlink()
    assert report.main([str(sweep)]) == 0
    lines = (sweep / "report.md").read_text().splitlines()
    assert not any(line.startswith("import") for line in lines)
    assert any("model.variant=x\\nimport os; os.system('touch PWNED')\\n |" in x for x in lines)
