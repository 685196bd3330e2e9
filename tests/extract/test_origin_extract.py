"""``extract --origin synthetic``: a folder of generated tiles with masks, into a store of real tiles or a store of
its own; the real tiles are never touched or recomputed, and what cannot work is refused in one line."""

from __future__ import annotations

import shutil

import pytest

from helpers import he_tiles
from helpers.he_tiles import TILES
from helpers.stores import data_bytes
from helpers.synthetic_tiles import synthetic_folder
from pathsegdiff.store import open_store
from pathsegdiff.store.backend.location import parse_location
from pathsegdiff.store.reader import read_root_attrs

STRIDE = ("--stride", "64")  # he_tiles' six 128x96 crops give 4 tiles each (helpers.he_tiles.ARGS: 6)
N_REAL, N_SYNTHETIC = 24, 8  # six real crops, two generated ones


def extract(src, out, *extra):
    return he_tiles.extract(src, out, *STRIDE, *extra)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return synthetic_folder(tmp_path_factory.mktemp("gen") / "generated", n=2)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "real.zarr"
    code, output = extract(TILES, out)
    assert code == 0 and f"{N_REAL} tiles written" in output, output
    return out


def test_synthetic_tiles_join_a_store_of_real_ones_without_touching_them(real, gen, tmp_path):
    store = tmp_path / "mixed.zarr"
    shutil.copytree(real, store)
    before = data_bytes(store)
    code, output = extract(gen, store, "--origin", "synthetic")
    assert code == 0 and f"{N_SYNTHETIC} tiles written ({N_SYNTHETIC} appended to the store)" in output, output
    fs = open_store(store)
    t = fs.table()
    assert list(t["origin"]) == ["real"] * N_REAL + ["synthetic"] * N_SYNTHETIC
    assert set(t["split"]) == {""} and (t["status"] == 1).all()
    assert all(str(s).startswith("gen_") for s in t["slide_id"][N_REAL:])
    after = data_bytes(store)
    chunks = [k for k in before if not k.startswith("tiles/") and not k.endswith("zarr.json")]  # the tiles' data
    assert len(chunks) > N_REAL and all(after[k] == before[k] for k in chunks), "a real tile's chunk changed"
    appended = read_root_attrs(parse_location(store))["provenance"]["appended"]
    assert appended[-1]["origin"] == "synthetic" and appended[-1]["kind"] == "folder"
    # the labels are the generated masks, the rgb the generated images
    tile = fs.read_tile(N_REAL)
    assert tile.record.origin == "synthetic" and tile.labels.max() <= 1
    # rerunning either extraction resumes: nothing recomputed, nothing appended
    for args in ((TILES,), (gen, "--origin", "synthetic")):
        code, output = extract(args[0], store, *args[1:])
        assert code == 0 and f"0 tiles written, {N_REAL + N_SYNTHETIC} already written" in output, output
    assert data_bytes(store) == after


def _one_error_line(code: int, output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, output
    return errors[0]


@pytest.mark.parametrize("split", ["val", "test"])
def test_synthetic_tiles_are_never_val_or_test(gen, tmp_path, split):
    line = _one_error_line(*extract(gen, tmp_path / "s.zarr", "--origin", "synthetic", "--split", split))
    assert f"--origin synthetic with --split {split}" in line and "never validation or test" in line
    assert not (tmp_path / "s.zarr").exists()


def test_refusals(real, gen, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(gen / "images", bare / "images")
    line = _one_error_line(*extract(bare, tmp_path / "a.zarr", "--origin", "synthetic"))
    assert "need their masks" in line
    line = _one_error_line(*extract(gen, tmp_path / "b.zarr", "--origin", "generated"))
    assert "--origin must be real or synthetic" in line
    line = _one_error_line(*extract(TILES.parents[0] / "cmu_small_region.svs", tmp_path / "c.zarr",
                                    "--origin", "synthetic"))
    assert "reads a folder of generated tiles" in line and "slide" in line
    store = tmp_path / "mixed.zarr"
    shutil.copytree(real, store)
    # the real images given as synthetic ones: their tile ids are the store's real tiles
    line = _one_error_line(*extract(TILES, store, "--origin", "synthetic"))
    assert f"{N_REAL} tile ids of this synthetic source are real tiles of the store" in line
    # a generated folder without --origin is a real source that lacks the store's tiles
    line = _one_error_line(*extract(gen, store))
    assert "--origin synthetic" in line
    assert (open_store(store).table()["origin"] == "real").all() and open_store(store).n_tiles == N_REAL


def test_real_tiles_wait_for_a_synthetic_extraction_to_finish_then_join_at_its_end(gen, tmp_path):
    store = tmp_path / "synthetic.zarr"
    code, output = extract(gen, store, "--origin", "synthetic", "--limit", "5")
    assert code == 0, output
    line = _one_error_line(*extract(TILES, store))
    assert f"{N_SYNTHETIC - 5} of its {N_SYNTHETIC} synthetic tiles are not written yet" in line
    code, output = extract(gen, store, "--origin", "synthetic")  # finished, the real tiles join at its end
    assert code == 0, output
    code, output = extract(TILES, store)
    assert code == 0 and f"{N_REAL} tiles written ({N_REAL} appended" in output, output
    assert list(open_store(store).table()["origin"]) == ["synthetic"] * N_SYNTHETIC + ["real"] * N_REAL
