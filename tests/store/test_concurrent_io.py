"""The store's fast path (chunk_io.py): zarr's bytes, the writer's guarantees, reads while a writer runs.

Chunks are encoded and written in threads, and single tiles read straight
from their files; none of that may change a byte on disk, what a plain
``zarr`` user reads, or the writer's promises: checks before any write,
errors that name the tile, status only after every chunk of a tile, and no
write left running after a failed batch.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import children, synth
from helpers.stores import store_bytes
from pathsegdiff.errors import SchemaError, StoreWriteError
from pathsegdiff.store import StoreSchema, TileBatch, create_store, open_store
from pathsegdiff.store.backend import chunk_io
from pathsegdiff.store.batch_check import finite_rows
from pathsegdiff.store.reader import FeatureStore
from pathsegdiff.store.schema import CODECS

LATENT = (3, 8, 8)


def every_array(codec: str = "none") -> StoreSchema:
    return StoreSchema(synth.spec(codec=codec), n_tiles=synth.N_TILES, class_names=synth.CLASSES, ssl_dim=5,
                       latent_shape=LATENT, store_instances=True)


def full_batch(indices, sch: StoreSchema) -> TileBatch:
    b = synth.tile_batch(indices, sch)
    s = sch.tile_size
    b.instances = np.stack([np.random.default_rng([i, 4]).integers(0, 9, (s, s), dtype=np.int32) for i in indices])
    b.latent = np.stack([np.random.default_rng([i, 5]).normal(size=LATENT).astype(np.float32) for i in indices])
    return b


def fill(path: Path, sch: StoreSchema, direct: bool, batches=((0, 1, 2, 3), (5, 4), (9,))) -> None:
    FeatureStore.direct_io = direct
    try:
        with create_store(path, sch, synth.records(), {"test": "concurrent-io"}) as w:
            for idx in batches:
                w.write(list(idx), full_batch(list(idx), sch))
    finally:
        FeatureStore.direct_io = True


@pytest.mark.parametrize("codec", CODECS)
def test_fast_path_writes_the_bytes_zarr_writes(tmp_path, codec):
    """Every object, byte for byte, equals what zarr's own codec pipeline writes (every array kind)."""
    sch = every_array(codec)
    fill(tmp_path / "fast.zarr", sch, direct=True)
    fill(tmp_path / "zarr.zarr", sch, direct=False)
    fast, slow = store_bytes(tmp_path / "fast.zarr"), store_bytes(tmp_path / "zarr.zarr")
    assert fast.keys() == slow.keys()
    assert [k for k in fast if fast[k] != slow[k]] == []


def test_fast_path_follows_the_arrays_chunk_key_encoding(tmp_path, monkeypatch):
    """With '/' chunk keys (``c/4/0/0/0``, stores made before the '.' keys) too: zarr's bytes, read back."""
    create = zarr.Group.create_array
    monkeypatch.setattr(zarr.Group, "create_array", lambda self, *a, **kw: create(
        self, *a, **{**kw, "chunk_key_encoding": {"name": "default", "separator": "/"}}))
    sch = every_array("lz4")
    fill(tmp_path / "fast.zarr", sch, direct=True)
    fill(tmp_path / "zarr.zarr", sch, direct=False)
    assert store_bytes(tmp_path / "fast.zarr") == store_bytes(tmp_path / "zarr.zarr")
    assert (tmp_path / "fast.zarr" / "features" / "t50" / "up1" / "c" / "4" / "0" / "0" / "0").is_file()
    tile = open_store(tmp_path / "fast.zarr").read_tile(4)
    assert np.array_equal(tile.features[50]["up1"], zarr.open_group(tmp_path / "zarr.zarr")["features/t50/up1"][4])


def test_direct_reads_equal_zarr_reads(tmp_path, monkeypatch):
    import pathsegdiff.store.reader as reader

    sch = every_array("lz4")  # blosc-compressed features as well as the plain ones beside them
    fill(tmp_path / "s.zarr", sch, direct=True)
    answered = []
    monkeypatch.setattr(reader, "read_elements", lambda *a, _real=reader.read_elements: answered.append(
        _real(*a) is not None) or _real(*a))
    fast = open_store(tmp_path / "s.zarr")
    plain = zarr.open_group(tmp_path / "s.zarr", mode="r")
    for i in (0, 4, 9):
        tile = fast.read_tile(i)
        for t, blocks in tile.features.items():
            for b, x in blocks.items():
                assert np.array_equal(x, plain[f"features/t{t}/{b}"][i]), (i, t, b)
                assert x.flags.writeable  # a reader may normalise in place, as with np.load
        for name in ("labels", "instances", "rgb", "ssl", "latent"):
            assert np.array_equal(getattr(tile, name), plain[name][i]), (i, name)
        assert np.array_equal(fast.read_features(i, 150, "up2"), plain["features/t150/up2"][i])
    assert answered and all(answered)  # the fast path (chunk files read directly) answered every tile read


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_finite_rows_agrees_with_isfinite(dtype):
    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, info.tiny, info.smallest_subnormal, info.max, -info.max, np.inf, -np.inf, np.nan,
                        -np.nan], dtype)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(len(special) + 3, 7)).astype(dtype)
    a[: len(special), 3] = special
    a.view(np.uint16 if dtype == "float16" else np.uint32)[-1, 0] |= 0x7C01 if dtype == "float16" else 0x7F800001
    assert np.array_equal(finite_rows(a), np.isfinite(a).all(axis=1))
    assert finite_rows(a[:0]).shape == (0,)


def test_the_callers_verdict_names_the_tile_and_nothing_lands(tmp_path):
    path = tmp_path / "s.zarr"
    batch = synth.tile_batch([0, 1, 2])
    feats16 = {t: {b: x.astype(np.float16) for b, x in d.items()} for t, d in batch.features.items()}
    verdict = {t: {b: np.ones(3, bool) for b in d} for t, d in feats16.items()}
    verdict[150]["up2"][1] = False
    with create_store(path, synth.schema(), synth.records()) as w:
        with pytest.raises(SchemaError, match=r"non-finite features in features/t150/up2.*tile001"):
            w.write([0, 1, 2], TileBatch(feats16, labels=batch.labels, rgb=batch.rgb, ssl=batch.ssl), finite=verdict)
        # features that still need a cast to float16 are checked here whatever the caller says: 1e6 overflows
        batch.features[50]["up1"][2, 0, 0, 0] = 1e6
        ok = {t: {b: np.ones(3, bool) for b in d} for t, d in batch.features.items()}
        with pytest.raises(SchemaError, match="tile002"):
            w.write([0, 1, 2], batch, finite=ok)
    assert len(open_store(path).written()) == 0
    assert not [p for p in (path / "features").rglob("*") if p.is_file() and p.name != "zarr.json"]  # no chunk


def test_a_failed_chunk_write_leaves_no_write_running(tmp_path, monkeypatch):
    """The first failure is raised only once every other chunk of the batch has settled; status stays todo."""
    path = tmp_path / "s.zarr"
    real = chunk_io.put_file
    doomed = None  # tile 2's chunk of features/t150/up2, whatever the chunk-key layout

    def flaky(target, parts):
        if target == doomed:
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.02)  # the others are still running when the failure comes
        return real(target, parts)

    with create_store(path, synth.schema(), synth.records()) as w:
        w.write([0, 1], synth.tile_batch([0, 1]))
        arr = zarr.open_array(path / "features/t150/up2", mode="r")
        doomed = os.path.join(str(path), "features/t150/up2", arr.metadata.encode_chunk_key((2, 0, 0, 0)))
        monkeypatch.setattr(chunk_io, "put_file", flaky)
        with pytest.raises(StoreWriteError, match="no space left"):
            w.write([2, 3, 4], synth.tile_batch([2, 3, 4]))
        after = sorted(p for p in path.rglob("*") if p.is_file())
        time.sleep(0.2)
        assert sorted(p for p in path.rglob("*") if p.is_file()) == after  # nothing landed after the error
        assert list(w.missing()) == list(range(2, synth.N_TILES))
    assert not [p for p in path.rglob("*") if p.name.endswith(".partial")]
    assert list(open_store(path).written()) == [0, 1]


def test_reads_while_a_writer_runs_see_whole_tiles(tmp_path):
    """A reader polling a store that another process fills sees written tiles whole, and only those."""
    path = tmp_path / "s.zarr"
    sch = synth.schema()
    with create_store(path, sch, synth.records()):
        pass
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], env=children.env(),
                             stderr=subprocess.PIPE)
    fs = open_store(path)
    expect = synth.tile_batch(range(synth.N_TILES))
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < synth.N_TILES and time.monotonic() < deadline:
        for i in fs.written():
            tile = fs.read_tile(int(i))
            for t, blocks in tile.features.items():
                for b, x in blocks.items():
                    assert np.array_equal(x, expect.features[t][b][i].astype(np.float16)), (i, t, b)
            assert np.array_equal(tile.rgb, expect.rgb[i])
            seen.add(int(i))
    assert child.wait(timeout=60) == 0, child.stderr.read().decode()
    assert seen == set(range(synth.N_TILES))


_SLOW_WRITER = """
import sys, time
from helpers import synth
from pathsegdiff.store import open_writer
with open_writer(sys.argv[1]) as w:
    for i in range(synth.N_TILES):
        w.write([i], synth.tile_batch([i]))
        time.sleep(0.05)
"""
