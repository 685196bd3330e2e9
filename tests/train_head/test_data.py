"""Splits, label fractions, selection, the streaming dataset and its augmentation."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.synthetic_store import build_store
from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store import open_store
from pathsegdiff.train_head.data import TileDataset, dihedral, make_loader
from pathsegdiff.train_head.splits import (
    label_subset,
    parse_label_fraction,
    read_splits,
    require_labels,
    resolve_selection,
)


def test_splits_from_the_table_and_only_written_tiles(tmp_path):
    where = build_store(tmp_path / "s", n_tiles=20, splits=(10, 4, 6), unwritten=3)
    sp = read_splits(open_store(where))
    assert (len(sp.train), len(sp.val), len(sp.test)) == (10, 4, 3)  # tiles 17-19 (test) are not written
    assert sp.val_source == "store"
    assert set(sp.train).isdisjoint(sp.val) and set(sp.val).isdisjoint(sp.test)


def test_val_carved_by_whole_slides_when_store_has_none(tmp_path):
    where = build_store(tmp_path / "s", n_tiles=30, splits=(25, 0, 5), n_slides=5)
    store = open_store(where)
    sp = read_splits(store, seed=3, val_fraction=0.2)
    slides = np.asarray(store.table()["slide_id"]).astype(str)
    assert len(sp.val) and len(sp.train) and len(sp.train) + len(sp.val) == 25
    assert set(slides[sp.val]).isdisjoint(slides[sp.train])  # no slide on both sides
    assert "slides" in sp.val_source
    again = read_splits(store, seed=3, val_fraction=0.2)
    assert (again.val == sp.val).all()


def test_val_carved_by_tiles_with_one_slide(tmp_path):
    where = build_store(tmp_path / "s", n_tiles=10, splits=(10, 0, 0), n_slides=1)
    sp = read_splits(open_store(where), seed=0, val_fraction=0.2)
    assert (len(sp.train), len(sp.val)) == (8, 2) and "tiles" in sp.val_source


def test_unassigned_tiles_count_as_train(tmp_path):
    where = build_store(tmp_path / "s", n_tiles=6, splits=(0, 2, 0))
    sp = read_splits(open_store(where))
    assert len(sp.train) == 4 and len(sp.test) == 0


def test_label_subsets_are_nested_and_fixed_by_seed():
    train = np.arange(100, 300)
    small, mid, full = (label_subset(train, f, seed=7) for f in (0.05, 0.3, 1.0))
    assert len(small) == 10 and len(mid) == 60 and (full == train).all()
    assert set(small) <= set(mid) <= set(full)
    assert (label_subset(train, 0.05, seed=7) == small).all()
    assert not (label_subset(train, 0.05, seed=8) == small).all()
    assert set(label_subset(train, 10, seed=7)) == set(small)  # k tiles = the same prefix


def test_label_fraction_errors():
    with pytest.raises(InputError, match="leaves no tile"):
        label_subset(np.arange(50), 0.01)
    with pytest.raises(InputError, match="only 5"):
        label_subset(np.arange(5), 9)
    with pytest.raises(InputError, match="empty"):
        label_subset(np.arange(0), 1.0)


@pytest.mark.parametrize("text, want", [("1", 1.0), ("0.25", 0.25), ("10%", 0.1), ("25", 25), (0.5, 0.5)])
def test_parse_label_fraction(text, want):
    got = parse_label_fraction(text)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("text", ["0", "1.5", "-3", "abc", "150%"])
def test_parse_label_fraction_rejects(text):
    with pytest.raises(ConfigError):
        parse_label_fraction(text)


def test_selection_checks_blocks_and_timesteps(learnable_store):
    store = open_store(learnable_store)
    blocks, ts = resolve_selection(store, ("up2",), (150,))
    assert [b.name for b in blocks] == ["up2"] and blocks[0].shape == (6, 16, 16) and ts == (150,)
    assert [b.name for b in resolve_selection(store, None, None)[0]] == ["up1", "up2"]
    with pytest.raises(ConfigError, match="no block 'mid'; the store has up1, up2"):
        resolve_selection(store, ("mid",), None)
    with pytest.raises(ConfigError, match="no timestep 250"):
        resolve_selection(store, None, (250,))


def test_store_without_labels_is_refused(tmp_path):
    where = build_store(tmp_path / "s", n_tiles=4, labels=False)
    with pytest.raises(InputError, match="no labels"):
        require_labels(open_store(where))


def test_items_hold_only_the_selected_features(learnable_store):
    ds = TileDataset(learnable_store, [0, 5], ["up1"], [150])
    item = ds[1]
    assert item["index"] == 5
    assert list(item["features"]) == [150] and list(item["features"][150]) == ["up1"]
    x = item["features"][150]["up1"]
    assert x.dtype == torch.float16 and x.shape == (8, 8, 8)
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (32, 32)
    raw = open_store(learnable_store).read_features(5, 150, "up1")
    assert (x.numpy() == raw).all()


@pytest.mark.parametrize("rot", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_commutes_with_bilinear_upsampling(rot, flip):
    x = torch.randn(1, 3, 8, 8)
    up = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    aug_then_up = F.interpolate(torch.from_numpy(dihedral(x.numpy(), rot, flip)), size=(32, 32),
                                mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(aug_then_up, dihedral(up, rot, flip), atol=1e-6)


def test_augmentation_moves_features_and_labels_together(learnable_store):
    store = open_store(learnable_store)
    ds = TileDataset(learnable_store, range(8), ["up1", "up2"], [50], augment=True, seed=4)
    changed = 0
    for item in (ds[i] for i in range(8)):
        i = item["index"]
        raw_labels = store.read_labels(i)
        ops = [(r, f) for r in range(4) for f in (False, True)
               if (dihedral(raw_labels, r, f) == item["labels"].numpy()).all()]
        assert ops, "labels are not a rotation/flip of the stored ones"
        assert any(all((dihedral(store.read_features(i, 50, b), r, f) == item["features"][50][b].numpy()).all()
                       for b in ("up1", "up2")) for r, f in ops)
        changed += ops[0] != (0, False)
    assert changed  # some tiles were actually transformed


def test_augmentation_depends_on_seed_epoch_and_tile_only(learnable_store):
    ds = TileDataset(learnable_store, range(8), ["up1"], [50], augment=True, seed=1)
    first = [ds[i]["labels"] for i in range(8)]
    assert all((a == b["labels"]).all() for a, b in zip(first, (ds[i] for i in range(8))))
    ds.set_epoch(1)
    assert any((a != ds[i]["labels"]).any() for i, a in enumerate(first))


def test_workers_give_the_same_batches_and_the_dataset_pickles_small(learnable_store):
    ds = TileDataset(learnable_store, range(12), ["up1", "up2"], [50, 150])
    ds[0]  # opens the store in this process
    assert len(pickle.dumps(ds)) < 2000 and pickle.loads(pickle.dumps(ds))._stores == {}
    plain = list(make_loader(ds, 4, shuffle=True, workers=0, seed=5))
    workers = list(make_loader(ds, 4, shuffle=True, workers=2, seed=5))
    assert [b["index"].tolist() for b in plain] == [b["index"].tolist() for b in workers]
    assert all((a["features"][150]["up2"] == b["features"][150]["up2"]).all() for a, b in zip(plain, workers))


def test_reads_from_a_zipped_store(learnable_store, tmp_path):
    zipped = shutil.make_archive(str(tmp_path / "packed"), "zip", learnable_store)
    a = TileDataset(zipped, [3], ["up2"], [50])[0]
    b = TileDataset(learnable_store, [3], ["up2"], [50])[0]
    assert (a["features"][50]["up2"] == b["features"][50]["up2"]).all() and (a["labels"] == b["labels"]).all()
