"""The tile table's ``origin`` column: real or synthetic tiles; a store made before the column reads as real, and
grows with synthetic tiles without losing its other columns."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from helpers import synth
from pathsegdiff.errors import SchemaError
from pathsegdiff.store import TileRecord, open_or_create, open_store
from pathsegdiff.store.commands.info import format_info, store_info
from pathsegdiff.store.tile_table import is_synthetic


def test_a_synthetic_tile_is_a_training_tile():
    assert TileRecord("a").origin == "real"
    TileRecord("a", split="train", origin="synthetic")
    TileRecord("a", split="", origin="synthetic")
    for split in ("val", "test"):
        with pytest.raises(SchemaError, match="synthetic tile is a training tile"):
            TileRecord("a", split=split, origin="synthetic")
    with pytest.raises(SchemaError, match="origin must be real or synthetic"):
        TileRecord("a", origin="generated")


def _old_store(path):
    """A store as made before the origin column (it has the cohort columns: patients set)."""
    records = [replace(r, patient=f"P{i % 3}") for i, r in enumerate(synth.records())]
    with open_or_create(path, synth.schema(), records) as w:
        w.write(range(len(records)), synth.tile_batch(range(len(records))))
    shutil.rmtree(path / "tiles" / "origin")
    return records


def test_a_store_made_before_the_column_reads_as_real(tmp_path):
    path = tmp_path / "old.zarr"
    _old_store(path)
    fs = open_store(path)
    assert not fs.has_array("tiles/origin")
    assert set(fs.table()["origin"]) == {"real"} and not is_synthetic(fs.table()).any()
    assert {r.origin for r in fs.records()} == {"real"}
    assert list(fs.table(["origin"], rows=slice(2, 5))["origin"]) == ["real"] * 3
    info = store_info(path)
    assert info["origins"] == {"real": 12, "synthetic": 0} and "origins" not in format_info(info)


def test_an_old_store_grows_with_synthetic_tiles_and_keeps_its_columns(tmp_path):
    path = tmp_path / "old.zarr"
    records = _old_store(path)
    before = open_store(path).table()
    new = [TileRecord(f"gen{i}", f"gen{i}", 0, 0, 0.5, "", origin="synthetic") for i in range(3)]
    with open_or_create(path, synth.schema(None), records + new) as w:
        w.write(range(12, 15), synth.tile_batch(range(12, 15)))
    fs = open_store(path)
    t = fs.table()
    assert list(t["origin"]) == ["real"] * 12 + ["synthetic"] * 3
    assert list(is_synthetic(t)) == [False] * 12 + [True] * 3
    for col in ("tile_id", "patient", "split", "level"):  # the columns the store had are kept, rows unchanged
        assert list(t[col][:12]) == list(before[col])
    assert fs.record(13) == new[1] and (fs.status() == 1).all()
    info = store_info(path)
    assert info["origins"] == {"real": 12, "synthetic": 3}
    assert "origins    real: 12, synthetic: 3" in format_info(info).splitlines()
    # a rerun with the same records is a resume: nothing appended, the origins compared and equal
    with open_or_create(path, synth.schema(None), records + new) as w:
        assert w.n_tiles == 15 and not len(w.missing())


def test_a_source_that_gives_a_tile_another_origin_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    records = synth.records()
    with open_or_create(path, synth.schema(None), records):
        pass
    assert records[0].split == "train"
    changed = [replace(records[0], origin="synthetic"), *records[1:]]
    with pytest.raises(SchemaError, match="has origin 'real' in the store but 'synthetic'"):
        with open_or_create(path, synth.schema(None), changed):
            pass
    assert np.asarray(open_store(path).table()["origin"]).tolist() == ["real"] * len(records)
