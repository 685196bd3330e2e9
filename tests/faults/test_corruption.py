"""Damage to every kind of object in a store: verify names it, a read raises a clear error, never wrong numbers.

``tests/store/test_bad_input.py`` covers one feature chunk and the root
``zarr.json``; this covers the other arrays (labels, instances, rgb, ssl,
latent), the tile table, the status column and an array's own ``zarr.json``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import synth
from helpers.stores import damage
from pathsegdiff.cli import app
from pathsegdiff.errors import CorruptStoreError, PathsegdiffError
from pathsegdiff.store import StoreSchema, create_store, open_store
from pathsegdiff.store.commands.verify import verify_store

runner = CliRunner()
DAMAGED = 4  # the tile whose chunks are damaged
LATENT = (3, 8, 8)


def full_schema() -> StoreSchema:
    return StoreSchema(synth.spec(), n_tiles=synth.N_TILES, class_names=synth.CLASSES, ssl_dim=5,
                       latent_shape=LATENT, store_instances=True)


def full_batch(indices, sch):
    b = synth.tile_batch(indices, sch)
    s = sch.tile_size
    b.instances = np.stack([np.random.default_rng([i, 4]).integers(0, 9, (s, s), dtype=np.int32) for i in indices])
    b.latent = np.stack([np.random.default_rng([i, 5]).normal(size=LATENT).astype(np.float32) for i in indices])
    return b


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "s.zarr"
    sch = full_schema()
    with create_store(path, sch, synth.records()) as w:
        w.write(range(8), full_batch(range(8), sch))
    return path


@pytest.fixture
def store(pristine, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(pristine, path)
    return path


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no raw traceback
    return r.exit_code, r.output


def error_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


# (array, chunk path of tile DAMAGED, how the trainer or predict reads it)
TILE_ARRAYS = {
    "features/t50/up1": ("features/t50/up1/c.{i}.0.0.0", lambda fs: fs.read_features(DAMAGED, 50, "up1")),
    "labels": ("labels/c.{i}.0.0", lambda fs: fs.read_labels(DAMAGED)),
    "instances": ("instances/c.{i}.0.0", lambda fs: fs.read_instances(DAMAGED)),
    "rgb": ("rgb/c.{i}.0.0.0", lambda fs: fs.read_rgb(DAMAGED)),
    "ssl": ("ssl/c.{i}.0", None),
    "latent": ("latent/c.{i}.0.0.0", None),
}


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("name", TILE_ARRAYS)
def test_damaged_tile_chunk(store, name, how):
    chunk, direct_read = TILE_ARRAYS[name]
    good = open_store(store).read_tile(DAMAGED)
    damage(store / chunk.format(i=DAMAGED), how)

    rep = verify_store(store)
    assert list(rep.problems) == [f"tile{DAMAGED:03d}"], rep.lines()
    assert rep.problems[f"tile{DAMAGED:03d}"][0].startswith(f"{name}: ")
    assert rep.damaged_indices == [DAMAGED]
    code, out = cli("store", "verify", store)
    assert code == 1 and f"tile{DAMAGED:03d}: {name}" in out

    fs = open_store(store)
    with pytest.raises(CorruptStoreError, match=name):
        fs.read_tile(DAMAGED)
    if direct_read is not None:  # the per-array reads the trainer makes (train_head/data.py)
        with pytest.raises(CorruptStoreError, match=name):
            direct_read(fs)
    # Neighbours still read, with the values written.
    assert np.array_equal(fs.read_tile(DAMAGED - 1).labels, synth.tile_batch([DAMAGED - 1]).labels[0])
    assert good.labels is not None


# Tile-table, status and metadata damage: verify fails with the array named; info and ls give one error line.
TABLE_OBJECTS = ["tiles/tile_id/c/0", "tiles/x/c/0", "tiles/y/c/0", "tiles/split/c/0", "tiles/mpp/c/0",
                 "tiles/status/c/0"]


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("obj", TABLE_OBJECTS)
def test_damaged_tile_table(store, obj, how):
    damage(store / obj, how)
    name = obj.rsplit("/c/", 1)[0]
    rep = verify_store(store)
    assert not rep.ok
    assert any(name in p for p in rep.store_problems), rep.lines()
    code, out = cli("store", "verify", store)
    assert code == 1 and name in out
    for verb in ("info", "ls"):
        code, out = cli("store", verb, store)
        assert code == 1, (verb, out)
        assert name in error_line(out) and str(store) in error_line(out)


METADATA = ["features/t50/up1/zarr.json", "labels/zarr.json", "rgb/zarr.json", "tiles/status/zarr.json",
            "tiles/tile_id/zarr.json"]


@pytest.mark.parametrize("how", ["truncate", "garbage", "delete", "wrong-shape"])
@pytest.mark.parametrize("obj", METADATA)
def test_damaged_array_metadata(store, obj, how):
    path = store / obj
    if how == "wrong-shape":  # valid JSON that disagrees with the chunks: one more channel or row
        doc = json.loads(path.read_text())
        doc["shape"][-1] += 1
        doc["chunk_grid"]["configuration"]["chunk_shape"][-1] += 1
        path.write_text(json.dumps(doc))
    else:
        damage(path, how)
    name = obj.removesuffix("/zarr.json")
    rep = verify_store(store)
    assert not rep.ok
    assert any(name in line for line in rep.lines()), rep.lines()
    code, out = cli("store", "verify", store)
    assert code == 1 and name in out
    fs = open_store(store)  # the root is intact, so the store opens ...
    with pytest.raises(PathsegdiffError, match=name):  # ... and reading the damaged array says which it is
        fs.read_tile(DAMAGED)
