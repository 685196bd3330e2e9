"""Synthetic tiles never reach validation or test, whatever the split options: a property test over random tile
tables (slides, patients, declared splits, written tiles, origins) and every seed, val fraction, label fraction
and ``--synthetic`` choice; then the same on stores read as one, through the notebook API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store import TileBatch, TileRecord, create_store
from pathsegdiff.train_head import api
from pathsegdiff.train_head.splits import SYNTHETIC_CHOICES, read_splits, split_table, train_tiles
from pathsegdiff.train_head.store_set import open_stores


@st.composite
def tile_tables(draw):
    """A tile table with real and synthetic rows.  A patient's real tiles share one declared split (the store
    refuses anything else); a synthetic tile's split is train or empty, its slide and patient anything."""
    n = draw(st.integers(2, 40))
    patient_split = {f"P{k}": draw(st.sampled_from(["train", "val", "test", ""])) for k in range(4)}
    rows = []
    for _ in range(n):
        synthetic = draw(st.booleans())
        slide = draw(st.sampled_from(["S0", "S1", "S2", "S3", "gen0"]))
        patient = draw(st.sampled_from(["", "P0", "P1", "P2", "P3"]))
        if synthetic:
            split = draw(st.sampled_from(["train", ""]))
        else:
            split = patient_split[patient] if patient else draw(st.sampled_from(["train", "val", "test", ""]))
        rows.append((f"t{len(rows)}", slide, patient, split, "synthetic" if synthetic else "real"))
    ok = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    table = {name: np.asarray([r[k] for r in rows], dtype=object)
             for k, name in enumerate(("tile_id", "slide_id", "patient", "split", "origin"))}
    return table, ok


label_fractions = st.one_of(st.sampled_from([1.0, 0.5, 0.1, 0.01]), st.integers(2, 30))


@settings(max_examples=200, deadline=None)
@given(tables=tile_tables(), seed=st.integers(0, 2**16), val_fraction=st.floats(0.05, 0.9),
       fraction=label_fractions, choice=st.sampled_from(SYNTHETIC_CHOICES))
def test_synthetic_tiles_never_reach_val_or_test(tables, seed, val_fraction, fraction, choice):
    table, ok = tables
    synthetic = ok & (table["origin"] == "synthetic")
    try:
        splits = split_table(table, ok, seed, val_fraction)
    except InputError as e:  # train tiles of one patient cannot be carved: refused whatever the origins
        assert "one patient" in str(e)
        return
    assert not synthetic[splits.val].any() and not synthetic[splits.test].any()
    assert sorted(splits.synthetic) == list(np.flatnonzero(synthetic))
    assert not synthetic[splits.train].any()
    # the real splits are what they would be without any synthetic tile: --synthetic changes training only
    alone = split_table(table, ok & ~synthetic, seed, val_fraction)
    for name in ("train", "val", "test"):
        assert list(getattr(alone, name)) == list(getattr(splits, name))
    try:
        chosen = train_tiles(splits, fraction, seed, choice)
    except InputError:  # an empty train split, a fraction leaving no tile or asking for more than there are
        return
    assert not np.isin(chosen, splits.val).any() and not np.isin(chosen, splits.test).any()
    real_chosen = chosen[~synthetic[chosen]]
    if choice == "exclude":
        assert not synthetic[chosen].any()
    elif choice == "only" or not len(splits.train):
        assert synthetic[chosen].all()
    else:
        assert set(splits.synthetic) <= set(chosen) and set(real_chosen) <= set(splits.train)
    if choice != "only" and len(splits.train):  # the label fraction keeps the same real tiles whatever the choice
        assert list(real_chosen) == list(train_tiles(splits, fraction, seed, "exclude"))


def test_a_synthetic_tile_marked_val_or_test_is_refused():
    table = {"tile_id": np.array(["a", "b", "c"], object), "slide_id": np.array(["S0", "S1", "S2"], object),
             "split": np.array(["train", "val", "test"], object),
             "origin": np.array(["real", "real", "synthetic"], object)}
    with pytest.raises(InputError, match="1 synthetic tiles are marked test .*training tiles only"):
        split_table(table, np.ones(3, bool))


def test_an_unknown_choice_and_only_without_synthetic_tiles_are_refused():
    table = {"tile_id": np.array(["a", "b"], object), "slide_id": np.array(["S0", "S1"], object),
             "split": np.array(["train", "train"], object)}
    splits = split_table(table, np.ones(2, bool))
    with pytest.raises(ConfigError, match="choose include, exclude or only"):
        train_tiles(splits, 1.0, 0, "some")
    with pytest.raises(InputError, match="no written synthetic tile"):
        train_tiles(splits, 1.0, 0, "only")
    assert list(train_tiles(splits, 1.0, 0, "include")) == list(splits.train)  # a store without them: as before


def _store(path, n: int, origin: str, splits: list[str], patients: list[str]) -> str:
    from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema

    spec = FeatureSpec("synthetic", "0" * 64, (BlockSpec("up1", 2, 2, 2),), (50,), tile_size=8)
    schema = StoreSchema(spec, n_tiles=n, class_names=("a", "b"), store_rgb=False)
    tiles = [TileRecord(f"{origin[0]}{i}", f"{origin}{i % 4}", 0, 0, 0.5, splits[i], patients[i], origin=origin)
             for i in range(n)]
    labels = np.random.default_rng(n).integers(0, 2, (n, 8, 8), dtype=np.uint8)
    with create_store(path, schema, tiles) as w:
        w.write(range(n), TileBatch(features={50: {"up1": np.zeros((n, 2, 2, 2), np.float32)}}, labels=labels))
    return str(path)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 1000), fraction=st.sampled_from(["100%", "50%", "3"]),
       patients=st.lists(st.sampled_from(["P0", "P1", "P2", "P3"]), min_size=1, max_size=3, unique=True))
def test_stores_read_as_one_keep_synthetic_tiles_out_of_val_and_test(two_stores, seed, fraction, patients):
    real, gen = two_stores
    stores = open_stores([gen, real])  # the synthetic store first: tile numbers shift, the real splits do not
    synthetic = np.asarray(stores.full_table()["origin"]) == "synthetic"
    splits = read_splits(stores, seed)
    assert not synthetic[splits.val].any() and not synthetic[splits.test].any()
    for choice in SYNTHETIC_CHOICES:
        train = api.open_dataset([gen, real], "train", label_fraction=fraction, data_seed=seed, synthetic=choice)
        assert synthetic[train.indices].any() == (choice != "exclude")
        for split in ("val", "test"):
            try:
                ds = api.open_dataset([gen, real], split, data_seed=seed, patients=patients)
            except ConfigError:  # none of those patients' tiles in that split
                continue
            assert not synthetic[ds.indices].any()


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    patients = [f"P{i % 4}" for i in range(16)]
    splits = ["train" if p in ("P0", "P1") else "test" if p == "P2" else "" for p in patients]
    real = _store(root / "real.zarr", 16, "real", splits, patients)
    gen = _store(root / "gen.zarr", 6, "synthetic", [""] * 6, ["P2", "P3", "", "P0", "", "P2"])
    return real, gen
