"""Splits never leak a patient: seeded validation by patient (else slide), and two declared splits refused."""

from __future__ import annotations

import numpy as np
import pytest

from pathsegdiff.errors import InputError
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileRecord, create_store, open_store
from pathsegdiff.store.tile_table import full_table
from pathsegdiff.train_head.splits import read_splits


def _store(path, rows: list[tuple[str, str, str]]) -> str:
    """A store whose tile table has one tile per (slide, patient, split) row; every tile written (no data needed
    by the splits, so the status is set directly through the writer's public API)."""
    spec = FeatureSpec("m", "0" * 64, (BlockSpec("b", 1, 2, 2),), (50,), tile_size=8)
    records = [TileRecord(f"{s}_{i}", s, i, 0, 0.5, split, patient) for i, (s, patient, split) in enumerate(rows)]
    with create_store(path, StoreSchema(spec, n_tiles=len(records)), records) as w:
        w.mark_written(range(len(records)))
    return str(path)


def test_seeded_validation_takes_whole_patients_for_every_seed(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(8):  # 8 patients, 1-3 slides each, 2-6 tiles per slide
        for s in range(int(rng.integers(1, 4))):
            rows += [(f"p{p}s{s}", f"P{p}", "")] * int(rng.integers(2, 7))
    rows += [("solo", "", "")] * 3  # a slide without a patient is its own group
    rows += [("held", "P9", "test")] * 4
    fs = open_store(_store(tmp_path / "s.zarr", rows))
    patient = np.where(full_table(fs)["patient"] != "", full_table(fs)["patient"], full_table(fs)["slide_id"])
    for seed in range(25):
        sp = read_splits(fs, seed=seed, val_fraction=0.25)
        groups = [set(patient[ix]) for ix in (sp.train, sp.val, sp.test)]
        assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2], seed
        assert len(sp.val) and "patients" in sp.val_source
        assert len(sp.train) + len(sp.val) + len(sp.test) == len(rows)
    assert len({tuple(read_splits(fs, seed=s).val) for s in range(5)}) > 1  # the seed matters


def test_a_patient_in_two_declared_splits_is_refused(tmp_path):
    rows = [("a", "P1", "train")] * 3 + [("b", "P1", "test")] * 2 + [("c", "P2", "test")] * 2
    fs = open_store(_store(tmp_path / "s.zarr", rows))
    with pytest.raises(InputError, match=r"s\.zarr: patient P1 has tiles in splits test, train: they would leak"):
        read_splits(fs)
    # an empty split is train: a patient with train and unassigned tiles is in one split, but the only one in
    # train, so no validation set can be carved without sharing its tiles
    fs = open_store(_store(tmp_path / "t.zarr", [("a", "P1", "train"), ("b", "P1", ""), ("c", "P2", "test")]))
    with pytest.raises(InputError, match=r"t\.zarr: the train tiles come from one patient"):
        read_splits(fs)
    fs = open_store(_store(tmp_path / "u.zarr", [("a", "P1", "train"), ("b", "P1", ""), ("c", "P2", "val")]))
    assert read_splits(fs).train.tolist() == [0, 1]
