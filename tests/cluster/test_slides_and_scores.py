"""``cluster``'s pieces: the ARI against scikit-learn's, tiles put back where they lie on their image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers.synthetic_store import BLOCKS, CLASSES, TILE, TIMESTEPS, blob_labels, encode
from pathsegdiff.cluster import ClusterConfig, cluster_stores
from pathsegdiff.cluster.scores import LabelAgreement, adjusted_rand_index, nearest
from pathsegdiff.cluster.slides import NearestCentreCanvas, footprint, safe_name
from pathsegdiff.store import FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store


def test_ari_matches_scikit_learn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    for k, c in ((3, 3), (5, 2), (2, 4)):
        a, b = rng.integers(0, k, 500), rng.integers(0, c, 500)
        b[:300] = a[:300] % c  # partly related
        table = np.zeros((k, c), np.int64)
        np.add.at(table, (a, b), 1)
        assert adjusted_rand_index(table) == pytest.approx(adjusted_rand_score(b, a), abs=1e-12)
    assert adjusted_rand_index(np.diag([5, 7, 9])) == pytest.approx(1.0)


def test_agreement_resizes_maps_and_leaves_out_ignored_pixels():
    maps = np.array([[[0, 1], [1, 0]]], np.uint8)
    assert (nearest(maps, 4, 4)[0] == np.kron(maps[0], np.ones((2, 2), np.uint8))).all()
    labels = np.kron(maps[0], np.ones((2, 2), np.uint8))[None].copy()
    labels[0, 0, 0] = 255
    agree = LabelAgreement(2, ("a", "b"), 255)
    agree.add(maps, labels)
    s = agree.summary()
    assert s["labelled_pixels"] == 15 and s["adjusted_rand_index"] == pytest.approx(1.0)
    assert s["composition"][1]["classes"] == {"a": 0.0, "b": 1.0}


def test_footprint_from_provenance_grid_or_tile_size():
    xs = np.array([0, 257, 514, 600])  # the last tile shifted back to the border
    assert footprint({"source": {"native_mpp": 0.25, "tile_mpp": 0.5}}, 256, xs, xs) == 512
    assert footprint({"source": {"stride": 128}}, 256, xs, xs) == pytest.approx(514)
    assert footprint({}, 256, xs, xs) == 256


def test_overlapping_tiles_meet_halfway():
    canvas = NearestCentreCanvas(4, 6, 255)
    canvas.put(0, 0, np.zeros((4, 4), np.uint8))
    canvas.put(0, 2, np.ones((4, 4), np.uint8))
    assert (canvas.image == [[0, 0, 0, 1, 1, 1]] * 4).all()
    assert safe_name("cohort/slide 1.svs") == "cohort_slide_1.svs"


def positioned_store(path):
    """Two images of 64x48 px tiled by 32 px tiles every 16 px (3x2 tiles each), features encoding the labels."""
    rng = np.random.default_rng(0)
    records = [TileRecord(f"{im}_{x}_{y}", im, x, y, 0.5) for im in ("imA", "imB")
               for y in (0, 16) for x in (0, 16, 32)]
    spec = FeatureSpec("synthetic", "0" * 64, BLOCKS, TIMESTEPS, tile_size=TILE)
    schema = StoreSchema(spec, n_tiles=len(records), class_names=CLASSES)
    labels = blob_labels(rng, len(records), len(CLASSES), TILE)
    feats = {t: {b.name: encode(labels, len(CLASSES), b, rng.normal(size=(b.channels, 3)), 0.3, rng)
                 for b in BLOCKS} for t in TIMESTEPS}
    with create_store(path, schema, records, provenance={"source": {"kind": "folder", "stride": 16}}) as w:
        w.write(range(len(records)), TileBatch(features=feats, labels=labels,
                                               rgb=np.full((len(records), 3, TILE, TILE), 200, np.uint8)))
    return str(path)


def test_tiles_are_put_back_on_their_images(tmp_path):
    store = positioned_store(tmp_path / "s.zarr")
    s = cluster_stores(store, tmp_path / "o", ClusterConfig(k=3), progress=False, echo=lambda m: None)
    assert s["tiles"] == 12 and set(s["slides"]) == {"imA", "imB"}
    info = s["slides"]["imA"]
    assert info["tiles"] == 6 and info["footprint"] == 32  # the grid's step (16) over the stride (16) x 32 px
    pic = Image.open(tmp_path / "o" / info["overlay"])
    img = np.asarray(pic)  # the 64x48 image at tile resolution, every pixel covered; white beside and a legend below
    assert pic.height > 48 and (img[:48, :64] != 255).any(-1).all() and (img[:48, 64:] == 255).all()
    doc = json.loads((tmp_path / "o" / info["geojson"]).read_text())
    assert doc["type"] == "FeatureCollection"
    xs = [x for f in doc["features"] for x, _ in f["geometry"]["coordinates"][0]]
    ys = [y for f in doc["features"] for _, y in f["geometry"]["coordinates"][0]]
    assert min(xs) == 0 and max(xs) == 64 and min(ys) == 0 and max(ys) == 48
