"""``predict --store`` on a PCA store reads the coefficients through the composed head: the decoding path's map.

The store is the bundled H&E tiles extracted with the tiny model (64 px, every 64 px) and compacted to
pca8-int8 (up1 keeps 8 of 64 channels, up2 8 of 48); the head an fcn with seeded weights recorded as trained
on it.  Every stored tile's logits are compared with the decoding path's, and the written masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from helpers.heads import store_head
from pathsegdiff.cli import app
from pathsegdiff.predict.inputs import ImageInput
from pathsegdiff.predict.run import PredictConfig, _store_tiles, predict
from pathsegdiff.predict.stitch import StitchConfig
from pathsegdiff.store.commands.compact import compact_store
from pathsegdiff.store.encodings import Calibration
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.data import to_device
from pathsegdiff.train_head.heads import HeadInputs

DATA = Path(__file__).parents[1] / "data" / "he_tiles"
IMAGE = DATA / "images" / "histo_x50_y50.png"
TILE = 64


@pytest.fixture(scope="module")
def pca_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pca")
    r = CliRunner().invoke(app, ["extract", str(DATA), "-o", str(root / "f16.zarr"), "--tile-size", str(TILE),
                                 "--stride", str(TILE), "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    compact_store(root / "f16.zarr", root / "pca.zarr", "pca8-int8", Calibration(tiles=24))
    return root / "pca.zarr"


@pytest.fixture(scope="module")
def head_run(pca_store, tmp_path_factory):
    return store_head(tmp_path_factory.mktemp("head") / "run", pca_store)


def tile_logits(head, meta, store: Path, compose: bool, lines: list[str] | None = None) -> dict:
    """(y, x) -> logits (K, S, S) of every tile predict reads from ``store`` for IMAGE."""
    cfg = PredictConfig(model=None, store=str(store), overlap=0, compose=compose)
    stitch = StitchConfig(tile=TILE, overlap=0)
    tiles, origin = _store_tiles(ImageInput(IMAGE, TILE), cfg, head, meta, stitch,
                                 (lines if lines is not None else []).append)
    out = {}
    with torch.no_grad():
        for y, x, feats, tile_head in tiles:
            out[(y, x)] = tile_head(HeadInputs(to_device(feats, torch.device("cpu")), (TILE, TILE)))[0]
    return {"logits": out, **origin}


def test_stored_tiles_read_composed_give_the_decoded_logits(head_run, pca_store):
    head, meta = load_head(head_run)
    composed, decoded = tile_logits(head, meta, pca_store, True), tile_logits(head, meta, pca_store, False)
    assert (composed["feature_path"], decoded["feature_path"]) == ("composed", "decoded")
    assert composed["from_store"] == 4 and set(composed["logits"]) == set(decoded["logits"])
    for key, want in decoded["logits"].items():
        got = composed["logits"][key]
        assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
        assert float((got.softmax(0) - want.softmax(0)).abs().max()) <= 1e-4
        assert torch.equal(got.argmax(0), want.argmax(0))


def test_predict_writes_the_same_mask_either_way_and_records_the_path(head_run, pca_store, tmp_path):
    masks = {}
    for compose in (True, False):
        out = tmp_path / f"compose-{compose}"
        cfg = PredictConfig(model=None, store=str(pca_store), overlap=0, compose=compose)
        r = predict(IMAGE, head_run, out, cfg)
        assert r["feature_path"] == ("composed" if compose else "decoded") and r["from_store"] == 4
        assert json.loads((out / "prediction.json").read_text())["feature_path"] == r["feature_path"]
        masks[compose] = np.asarray(Image.open(out / "mask.png"))
    assert np.array_equal(masks[True], masks[False])


class PlugIn(nn.Module):
    def forward(self, inputs: HeadInputs) -> torch.Tensor:
        x = inputs.features[50]["up2"][:, :2]
        return nn.functional.interpolate(x, size=inputs.size, mode="bilinear")


def test_a_plug_in_head_decodes_the_stored_tiles_and_says_so(head_run, pca_store):
    _, meta = load_head(head_run)
    lines: list[str] = []
    got = tile_logits(PlugIn(), meta, pca_store, True, lines)
    assert got["feature_path"] == "decoded" and len(got["logits"]) == 4
    assert len(lines) == 1 and "PlugIn head decodes every tile of this pca8-int8 store" in lines[0]
