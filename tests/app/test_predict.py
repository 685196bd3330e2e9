"""`pathsegdiff predict`: stitching quality with the tiny model, outputs, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from helpers.heads import CLASSES, tiny_model_head
from pathsegdiff.cli import app
from pathsegdiff.colours import class_colour
from pathsegdiff.predict.inputs import ImageInput
from pathsegdiff.predict.run import PredictConfig, _extracted_tiles, _featurizer
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.predict.stitch import StitchConfig, fuse_tiles

DATA = Path(__file__).parents[1] / "data"
IMAGE = DATA / "target_image.png"
TILE = 128
runner = CliRunner()


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    return tiny_model_head(tmp_path_factory.mktemp("head"))


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    """A 320x352 crop of a real H&E image."""
    path = tmp_path_factory.mktemp("img") / "crop.png"
    Image.open(IMAGE).convert("RGB").crop((100, 200, 452, 520)).save(path)
    return path


def fused_logits(image: Path, head_run: Path, overlap: int, window: str) -> tuple[np.ndarray, StitchConfig]:
    head, meta = load_head(head_run)
    stitch = StitchConfig(tile=TILE, overlap=overlap, window=window)
    source = ImageInput(image, TILE)
    tiles = ((y, x, head(f)[0].detach().numpy()) for y, x, f in _extracted_tiles(source, _featurizer(PredictConfig(), meta), PredictConfig(), stitch))
    return fuse_tiles(tiles, source.height, source.width, len(CLASSES), stitch), stitch


def seam_jump(logits: np.ndarray, stitch: StitchConfig) -> float:
    """Mean |step| of the logits across rows and columns where a tile starts or ends, over the mean step elsewhere."""
    from pathsegdiff.predict.stitch import tile_origins

    _, h, w = logits.shape
    dy = np.abs(np.diff(logits, axis=1)).mean(axis=(0, 2))  # step between row r and r+1
    dx = np.abs(np.diff(logits, axis=2)).mean(axis=(0, 1))

    def seams(length: int) -> set[int]:
        edges = set()
        for o in tile_origins(length, stitch.tile, stitch.stride):
            edges |= {o - 1, o + stitch.tile - 1}
        return {e for e in edges if 0 <= e < length - 1}

    sy, sx = sorted(seams(h)), sorted(seams(w))
    inner_y = np.setdiff1d(np.arange(h - 1), sy)
    inner_x = np.setdiff1d(np.arange(w - 1), sx)
    return float((dy[sy].mean() + dx[sx].mean()) / (dy[inner_y].mean() + dx[inner_x].mean()))


def test_gaussian_fusion_has_smaller_seams_than_mean_or_no_overlap(small_image, head_run):
    gaussian = seam_jump(*fused_logits(small_image, head_run, 64, "gaussian"))
    mean = seam_jump(*fused_logits(small_image, head_run, 64, "mean"))
    none = seam_jump(*fused_logits(small_image, head_run, 0, "none"))
    print(f"seam jump / interior step: gaussian {gaussian:.3f}, mean {mean:.3f}, no overlap {none:.3f}")
    assert gaussian < mean
    assert gaussian < none


def test_predict_image_writes_mask_overlay_and_geojson(small_image, head_run, tmp_path):
    out = tmp_path / "pred"
    r = runner.invoke(app, ["predict", str(small_image), "--head", str(head_run), "-o", str(out)])
    assert r.exit_code == 0, r.output
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask.shape == (320, 352) and mask.dtype == np.uint8
    summary = json.loads((out / "prediction.json").read_text())
    assert (summary["width"], summary["height"]) == (352, 320)  # named, as the console's W x H, not an [H, W] pair
    assert set(np.unique(mask)) <= {0, 1, 2}
    ov = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    assert ov.shape[1] == 352 and ov.shape[0] > 320  # the picture, then a legend strip under it
    legend = ov[320:]
    for k in range(len(CLASSES)):  # every class's swatch, in the colour the overlay paints it
        assert (legend == np.array(class_colour(k), np.uint8)).all(-1).sum() >= 16, CLASSES[k]
    doc = json.loads((out / "regions.geojson").read_text())
    assert doc["type"] == "FeatureCollection"
    n_regions = 0
    for k in range(len(CLASSES)):
        labels, n = ndimage.label(mask == k, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        n_regions += int((sizes >= 16).sum())  # predict drops specks under 16 px
    assert len(doc["features"]) == n_regions
    for f in doc["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert f["properties"]["classification"]["name"] in CLASSES
        assert f["properties"]["class_name"] == CLASSES[f["properties"]["class_id"]]
    r = runner.invoke(app, ["predict", str(small_image), "--head", str(head_run), "-o", str(out)])
    assert r.exit_code == 1 and "--overwrite" in r.output


def test_predict_slide_writes_pyramidal_tiff(tmp_path):
    pytest.importorskip("tiffslide")
    import tifffile

    from helpers.slides import write_slide_crop

    run = tiny_model_head(tmp_path / "head256", tile=256)
    out = tmp_path / "slide"
    slide = write_slide_crop(tmp_path / "crop.tif", size=2048)  # the reader's path, half the tiles
    r = runner.invoke(app, ["predict", str(slide), "--head", str(run), "-o", str(out),
                            "--overlap", "0", "--min-tissue", "0.5"])
    assert r.exit_code == 0, r.output
    with tifffile.TiffFile(out / "mask.tif") as tf:
        levels = tf.series[0].levels
        assert len(levels) >= 2
        full = levels[0].asarray()
    assert full.shape == (2048, 2048)  # the slide at 0.5 um/px is analysed as it is
    assert set(np.unique(full)) <= {0, 1, 2, 255} and (full != 255).mean() > 0.2
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["kind"] == "slide" and summary["tiles"] >= 8


def test_bad_inputs(tmp_path, head_run, small_image):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    r = runner.invoke(app, ["predict", str(notes), "--head", str(head_run), "-o", str(tmp_path / "o1")])
    assert r.exit_code == 1 and "notes.png" in r.output and "Traceback" not in r.output
    other = tiny_model_head(tmp_path / "other", weights_sha256="e" * 64)
    r = runner.invoke(app, ["predict", str(small_image), "--head", str(other), "-o", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "weights_sha256" in r.output
    r = runner.invoke(app, ["predict", str(small_image), "--head", str(tmp_path / "nohead"), "-o", str(tmp_path / "o3")])
    assert r.exit_code == 1 and "no trained head" in r.output


def test_slide_without_tissue_is_refused(tmp_path, head_run):
    pytest.importorskip("tiffslide")
    import tifffile

    blank = tmp_path / "blank.tif"
    data = np.full((1024, 1024, 3), 242, np.uint8)
    with tifffile.TiffWriter(blank) as tif:
        tif.write(data, tile=(256, 256), subifds=1, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(data[::2, ::2], tile=(256, 256), subfiletype=1)
    r = runner.invoke(app, ["predict", str(blank), "--head", str(head_run), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "blank.tif" in r.output and "tissue" in r.output, r.output
