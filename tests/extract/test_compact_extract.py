"""`pathsegdiff extract --compact`: calibration once, bases stored and reused on resume and append, presets refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers.he_tiles import TILES  # the same tiles as test_job.py
from helpers.stores import data_bytes  # every object but the root document
from pathsegdiff.cli import app
from pathsegdiff.store import open_store
from pathsegdiff.store.encodings import relative_error
from pathsegdiff.store.commands.verify import verify_store

ARGS = ["--tile-size", "64", "--stride", "32", "--quiet", "--batch-size", "4"]  # 36 tiles from six crops
PCA = ["--compact", "pca8-int8", "--calibration-tiles", "6"]
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def extract(src, out, *extra):
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), *ARGS, *map(str, extra)])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A float16 store and an uninterrupted pca8-int8 store of the same tiles."""
    root = tmp_path_factory.mktemp("compact")
    out = {}
    for name, extra in (("float16", []), ("pca", PCA)):
        code, output = extract(TILES, root / f"{name}.zarr", *extra)
        assert code == 0, output
        out[name] = root / f"{name}.zarr"
    out["pca_output"] = output
    return out


def test_a_pca_extraction_calibrates_once_and_decodes_close_to_float16(stores):
    assert "calibrating pca8-int8: 6 tiles" in stores["pca_output"] and "36 tiles written" in stores["pca_output"]
    fs, ref = open_store(stores["pca"]), open_store(stores["float16"])
    assert fs.schema.features.encoding == "pca8-int8" and fs.schema.features.basis_sha256
    assert len(fs.written()) == 36 and verify_store(stores["pca"]).ok
    assert fs.schema.feature_bytes_per_tile() < ref.schema.feature_bytes_per_tile() / 4
    assert fs.provenance["extract"]["compact"] == "pca8-int8"
    for i in (0, 20, 35):
        a, b = ref.read_tile(i), fs.read_tile(i)
        np.testing.assert_array_equal(a.labels, b.labels)
        for t in a.features:
            for blk, x in a.features[t].items():
                y = b.features[t][blk]
                assert y.shape == x.shape and y.dtype == np.float32
                assert relative_error(x, y) < 1.0  # 8 of 32..64 channels of a seeded model: lossy, but not noise


def test_interrupted_then_resumed_is_bit_identical_to_uninterrupted(stores, tmp_path):
    out = tmp_path / "r.zarr"
    code, output = extract(TILES, out, *PCA, "--limit", "10")  # the 6 calibration tiles, then 4 more
    assert code == 0, output
    assert len(open_store(out).written()) == 10
    code, output = extract(TILES, out, *PCA, "--batch-size", "5")
    assert code == 0, output
    assert "calibrating" not in output and "26 tiles written" in output  # the stored bases are reused
    assert data_bytes(out) == data_bytes(stores["pca"])


def test_another_preset_is_refused_and_changes_nothing(stores, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(stores["pca"], out)
    before = data_bytes(out)
    for extra in (["--compact", "int8"], ["--compact", "pca4-int8"], []):
        code, output = extract(TILES, out, *extra)
        assert code == 1 and "encoding" in output and str(out) in output, output
        assert "calibrating" not in output  # refused before any model work on the other preset
    assert data_bytes(out) == before


def test_append_reuses_the_stored_bases(tmp_path):
    part = tmp_path / "part"
    (part / "images").mkdir(parents=True)
    (part / "masks").mkdir()
    shutil.copy(TILES / "classes.txt", part)
    for img in sorted((TILES / "images").iterdir())[:3]:
        shutil.copy(img, part / "images")
        shutil.copy(TILES / "masks" / img.name, part / "masks")
    out = tmp_path / "a.zarr"
    code, output = extract(part, out, *PCA)
    assert code == 0, output
    before = open_store(out)
    n_before, spec_before = before.n_tiles, before.schema.features
    bases = {p: (out / p).read_bytes() for p in data_bytes(out) if p.startswith("pca/")}
    kept = {p: b for p, b in data_bytes(out).items() if p.startswith("features/") and "zarr.json" not in p}
    code, output = extract(TILES, out, *PCA)
    assert code == 0, output
    assert "calibrating" not in output and "appended" in output
    fs = open_store(out)
    assert fs.n_tiles == 36 > n_before and len(fs.written()) == 36 and verify_store(out).ok
    assert fs.identity == before.identity and fs.schema.features.basis_sha256 == spec_before.basis_sha256
    assert {p: (out / p).read_bytes() for p in bases} == bases  # the bases as stored first
    assert {p: (out / p).read_bytes() for p in kept} == kept  # the tiles already there untouched


def test_the_trainers_dataset_reads_decoded_features(stores):
    from pathsegdiff.train_head.data import TileDataset

    fs = open_store(stores["pca"])
    item = TileDataset(str(stores["pca"]), [3, 7], fs.blocks, fs.timesteps)[1]
    for t in fs.timesteps:
        for b in fs.blocks:
            x = item["features"][t][b]
            assert x.dtype == torch.float32 and tuple(x.shape) == fs.schema.features.block(b).shape
            np.testing.assert_array_equal(x.numpy(), fs.read_tile(7).features[t][b])


def test_a_distributed_run_resumes_a_pca_store_with_its_bases(stores, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "d.zarr"
    code, output = extract(TILES, out, *PCA, "--limit", "10")
    assert code == 0, output
    code, output = extract(TILES, out, *PCA, "--workers", "1")  # workers read the bases from the store
    assert code == 0 and "26 tiles written" in output, output
    assert data_bytes(out) == data_bytes(stores["pca"])


def test_unreadable_calibration_tiles_are_recorded_and_logged_like_any_other(tmp_path):
    src = tmp_path / "tiles"
    shutil.copytree(TILES, src)
    bad = src / "images" / "target_image_x400_y300.png"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # header intact, pixels truncated
    out = tmp_path / "p.zarr"
    code, output = extract(src, out, "--compact", "pca8-int8", "--calibration-tiles", "36", "--skip-errors")
    assert code == 0, output
    fs = open_store(out)
    assert len(fs.fail_reasons()) == 6 and len(fs.written()) == 30  # all computed in the calibration pass
    logged = (tmp_path / "p.zarr.errors.log").read_text().splitlines()
    assert len(logged) == 6 and all(line.startswith("target_image_x400_y300") for line in logged)
