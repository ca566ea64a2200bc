"""diffpool-viz: the pooling picture of a trained run."""

from __future__ import annotations

import numpy as np
import pytest

from diffpool.cli.viz import main as viz_main
from diffpool.training.predict import load_run
from diffpool.viz import draw_pooling
from helpers import trained_mutag_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    return trained_mutag_run(tmp_path_factory.mktemp("viz"), "det", "model=det")


def test_picture_colours_every_node_by_its_cluster(det_run, tmp_path):
    """With DiffPool-Det the clusters are known in advance: the METIS partition."""
    module, datamodule = load_run(det_run)
    data = datamodule.dataset[5]
    picture = draw_pooling(module, data, tmp_path / "pooling.png")
    assert picture.path.read_bytes()[:8] == PNG
    assert picture.clusters.tolist() == data.det_cluster0.tolist()
    assert len(picture.used) == int(data.det_num_clusters0) == len(set(picture.colors.values()))
    assert picture.coarse_adj.shape == (len(picture.used),) * 2

    import matplotlib.image

    pixels = (matplotlib.image.imread(picture.path)[..., :3] * 255).round().astype(int)
    found = {tuple(p) for p in np.unique(pixels.reshape(-1, 3), axis=0)}
    for colour in picture.colors.values():
        rgb = tuple(int(round(255 * c)) for c in colour)
        assert rgb in found, f"cluster colour {rgb} is not in the image"


def test_cli_draws_a_learned_run_and_names_bad_input(tmp_path, capsys):
    run = trained_mutag_run(tmp_path, "diffpool", "trainer.max_epochs=1")
    out = tmp_path / "g3.png"
    assert viz_main([str(run), "--graph", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert "clusters used" in capsys.readouterr().out
    assert viz_main([str(run), "--graph", "100000"]) == 2
    assert "--graph must be in [0, 188)" in capsys.readouterr().err
    assert viz_main([str(tmp_path / "nowhere")]) == 2
    assert "results.json not found" in capsys.readouterr().err
    flat = trained_mutag_run(tmp_path, "base", "model=base", "trainer.max_epochs=1")
    assert viz_main([str(flat)]) == 2
    assert "no pooling level" in capsys.readouterr().err


def test_a_title_from_a_run_is_drawn_as_text_and_no_link_is_written_through(det_run, tmp_path):
    r"""The title names the run's dataset (its results.json): ``$\undefined$`` is text, not
    mathtext that fails to parse; a PNG path that is a link is refused."""
    module, datamodule = load_run(det_run)
    picture = draw_pooling(module, datamodule.dataset[0], tmp_path / "p.png", title=r"$\undefined$")
    assert picture.path.read_bytes()[:8] == PNG
    (tmp_path / "link.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(ValueError, match="link.png is a symbolic link"):
        draw_pooling(module, datamodule.dataset[0], tmp_path / "link.png")
    assert not (tmp_path / "elsewhere.png").exists()
