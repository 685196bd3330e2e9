"""``predict SLIDE --store S`` is never silently partial: the store's tiles, the missing ones computed or refused.

The head is trained for one epoch on the cohort store (tiny model, 128 px at 1 um/px); the slide is the bundled
.svs, whose tissue reaches its bottom edge.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.predict.outputs import UNANALYSED

runner = CliRunner()


@pytest.fixture(scope="module")
def head(cohort_store, tmp_path_factory):
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    run = tmp_path_factory.mktemp("head") / "run"
    train(str(cohort_store[0]), run, TrainConfig(head="fcn", epochs=1), progress=False, plots=False)
    return run


def predict(cohort, head, store, out, *extra):
    return runner.invoke(app, ["predict", str(cohort["svs"]), "--head", str(head), "-o", str(out), "--store",
                               str(store), "--mpp", "1.0", *map(str, extra)])


def test_a_store_that_lacks_tiles_is_refused_with_how_many_and_why(cohort, cohort_store, head, tmp_path):
    # predict's grid every 96 px (the default overlap of 32) against the store's every 128 px
    r = predict(cohort, head, cohort_store[0], tmp_path / "o1")
    assert r.exit_code == 1 and not (tmp_path / "o1").exists()
    line = r.output.strip().splitlines()[-1]
    assert "tiles predict needs are in the store" in line and "lie off the store's grid" in line, line
    assert "the store's tiles are every 128 px, predict's every 96 px; --overlap 0 uses the store's grid" in line
    assert "--model" in line and "cmu_small_region.svs" in line
    # on the store's grid, tiles with little tissue (the store kept tiles with half their area tissue)
    r = predict(cohort, head, cohort_store[0], tmp_path / "o2", "--overlap", "0")
    line = r.output.strip().splitlines()[-1]
    assert r.exit_code == 1 and "39 of the 57 tiles" in line and "18 have less tissue than the extraction kept "\
        "(--min-tissue 0.5)" in line, line


def test_with_a_model_every_tissue_tile_is_predicted_edges_included(cohort, cohort_store, head, tmp_path):
    import tifffile

    from pathsegdiff.tiles.wsi import SlideSource

    out = tmp_path / "pred"
    r = predict(cohort, head, cohort_store[0], out, "--overlap", "0", "--model", "tiny")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "prediction.json").read_text())
    assert (summary["tiles"], summary["from_store"], summary["computed"]) == (57, 39, 18)
    assert "57 tiles (39 from the store, 18 computed)" in r.output
    mask = tifffile.imread(out / "mask.tif", level=0)
    assert mask.shape == (1480, 1107)  # the slide (2220 x 2967 at 0.499 um/px) at 1 um/px
    src = SlideSource(cohort["svs"], tile_size=128, target_mpp=1.0, min_tissue=0.0)
    _, tissue = src.thumbnail()
    tissue = np.asarray(Image.fromarray(tissue).resize(mask.shape[::-1], Image.Resampling.NEAREST))
    # away from the thumbnail's blocky outline (8 px of a 1107 px wide map), but not from the slide's border
    inner = ndimage.binary_erosion(tissue, np.ones((17, 17), bool), border_value=1)
    assert inner[-8:].any()  # tissue reaches the bottom edge ...
    assert (mask[inner] != UNANALYSED).all()  # ... and every tissue pixel is analysed, the bottom rows included
    assert (mask[-4:][tissue[-4:]] != UNANALYSED).all()
