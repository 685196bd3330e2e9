"""``cluster``: k-means / NMF maps of synthetic stores whose features encode the labels, and their refusals."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.synthetic_store import BLOCKS, TIMESTEPS, build_store
from pathsegdiff.cluster import ClusterConfig, cluster_stores
from pathsegdiff.errors import ConfigError, InputError, MissingDependencyError, StoreExistsError
from pathsegdiff.store import FeatureSpec, StoreSchema, TileRecord, create_store

C = sum(b.channels for b in BLOCKS) * len(TIMESTEPS)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_stores")
    return {"learnable": build_store(root / "learnable"), "shuffled": build_store(root / "shuffled", shuffled=True),
            "second": build_store(root / "second", n_tiles=16, splits=(8, 4, 4), seed=1),
            "other_model": build_store(root / "other", n_tiles=2, splits=(2, 0, 0), weights_sha256="1" * 64)}


@pytest.fixture(scope="module")
def kmeans_out(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "kmeans"
    return out, cluster_stores(stores["learnable"], out, ClusterConfig(k=3), progress=False, echo=lambda m: None)


def quiet(store, out, overwrite=False, **cfg):
    return cluster_stores(store, out, ClusterConfig(**cfg), overwrite=overwrite, progress=False, echo=lambda m: None)


def test_kmeans_recovers_the_labels_the_features_encode(kmeans_out):
    _, s = kmeans_out
    assert s["labels"]["adjusted_rand_index"] > 0.6
    assert s["tiles"] == 40 and s["k"] == 3 and s["method"] == "kmeans"
    assert s["blocks"] == ["up1", "up2"] and s["timesteps"] == [50, 150] and s["map_size"] == [16, 16]
    comp = s["labels"]["composition"]
    assert [c["cluster"] for c in comp] == [0, 1, 2]
    # each cluster is mostly one class, and the three clusters take three different classes
    majors = {max(c["classes"], key=c["classes"].get) for c in comp}
    assert len(majors) == 3 and all(max(c["classes"].values()) > 0.7 for c in comp)


def test_a_shuffled_store_gives_chance_agreement(stores, tmp_path):
    assert abs(quiet(stores["shuffled"], tmp_path / "o", k=3)["labels"]["adjusted_rand_index"]) < 0.05


def test_nmf_concepts_recover_the_labels(stores, tmp_path):
    s = quiet(stores["learnable"], tmp_path / "o", k=3, method="nmf")
    assert s["labels"]["adjusted_rand_index"] > 0.6
    assert np.load(tmp_path / "o" / "components.npy").shape == (3, 2 * C)  # positive and negative parts
    assert np.load(tmp_path / "o" / "centroids.npy").shape == (3, C)


def test_outputs_load(kmeans_out):
    out, s = kmeans_out
    maps = np.load(out / "tile_maps.npy")
    assert maps.shape == (40, 16, 16) and maps.dtype == np.uint8 and maps.max() == 2
    assert np.load(out / "centroids.npy").shape == (3, C)
    st = np.load(out / "standardisation.npz")
    assert st["mean"].shape == st["std"].shape == (C,) and (st["std"] > 0).all()
    assert st["channels"][0] == "t50/up1/0" and len(st["channels"]) == C
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    assert len(rows) == 40 and rows[3]["tile_id"] == "t003" and rows[3]["slide_id"] == "S3"
    assert sum(s["pixels_per_cluster"]) == 40 * 16 * 16 and s["inertia"] > 0 and s["wall_s"] > 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 0
    assert set(s["slides"]) == {f"S{i}" for i in range(5)}
    for info in s["slides"].values():
        assert Image.open(out / info["overlay"]).mode == "RGB"
        doc = json.loads((out / info["geojson"]).read_text())
        assert doc["type"] == "FeatureCollection" and doc["features"]
        for f in doc["features"]:
            assert f["geometry"]["type"] == "Polygon"
            assert f["properties"]["classification"]["name"] in {"cluster 0", "cluster 1", "cluster 2"}


def test_the_same_seed_gives_the_same_map(stores, kmeans_out, tmp_path):
    quiet(stores["learnable"], tmp_path / "o", k=3)
    assert (np.load(tmp_path / "o" / "tile_maps.npy") == np.load(kmeans_out[0] / "tile_maps.npy")).all()


def test_selection_and_size(stores, tmp_path):
    s = quiet(stores["learnable"], tmp_path / "o", k=4, blocks=("up1",), timesteps=(150,), size=4)
    assert s["channels"] == [{"timestep": 150, "block": "up1", "channels": 8}]
    assert np.load(tmp_path / "o" / "tile_maps.npy").shape == (40, 4, 4)
    with pytest.raises(Exception, match="no block 'up9'"):
        quiet(stores["learnable"], tmp_path / "p", k=3, blocks=("up9",))


def test_several_stores_read_as_one(stores, tmp_path):
    s = quiet([stores["learnable"], stores["second"]], tmp_path / "o", k=3)
    assert s["tiles"] == 56 and len(s["stores"]) == 2
    assert s["labels"]["adjusted_rand_index"] > 0.6
    rows = list(csv.DictReader((tmp_path / "o" / "tiles.csv").open()))
    assert [r["store"] for r in rows[39:41]] == ["0", "1"] and rows[40]["index"] == "0"


def test_refusals(stores, tmp_path):
    with pytest.raises(ConfigError, match="2 to 254 clusters"):
        ClusterConfig(k=1)
    with pytest.raises(ConfigError, match="--method"):
        ClusterConfig(method="pca")
    with pytest.raises(ConfigError, match="weights_sha256 differ"):
        quiet([stores["learnable"], stores["other_model"]], tmp_path / "o", k=3)
    with pytest.raises(ConfigError, match="given twice"):
        quiet([stores["learnable"], stores["learnable"]], tmp_path / "o", k=3)
    spec = FeatureSpec("synthetic", "0" * 64, BLOCKS, TIMESTEPS, tile_size=32)
    create_store(tmp_path / "empty", StoreSchema(spec, n_tiles=2), [TileRecord("a"), TileRecord("b")]).close()
    with pytest.raises(InputError, match="no written tiles"):
        quiet(str(tmp_path / "empty"), tmp_path / "o", k=3)
    assert not (tmp_path / "o").exists()


def test_output_folder_rules(stores, kmeans_out, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(StoreExistsError, match="did not write"):
        quiet(stores["learnable"], foreign, k=3, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "o"
    quiet(stores["learnable"], out, k=3, size=4)
    with pytest.raises(StoreExistsError, match="--overwrite"):
        quiet(stores["learnable"], out, k=3)
    quiet(stores["learnable"], out, k=2, size=4, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["k"] == 2


def test_missing_scikit_learn_names_the_extra(stores, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'pathsegdiff\[cluster\]'"):
        quiet(stores["learnable"], tmp_path / "o", k=3)
    assert not (tmp_path / "o").exists()
