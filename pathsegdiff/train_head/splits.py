"""Which tiles and which features a run uses: splits, label fractions, block/timestep selection.

Only tiles whose status is written take part.  Splits come from the
``split`` column of the tile table (a cohort manifest's ``split``).  Tiles
with an empty split count as train.  A patient whose tiles lie in two splits
is refused: its tiles would leak from one split into the other.  When no
written tile is marked ``val``, a validation set is carved from train with the
data seed, by group: whole patients where the tile table names them (tiles
of one patient are correlated), else whole slides when train spans at least
two, else single tiles; about ``val_fraction`` of the tiles, at least one, and
never all of train.  Label-fraction subsets are prefixes of one seeded
permutation of the train tiles, so for one seed the 1 % subset lies inside the
10 % one.

Synthetic tiles (tile-table ``origin``, docs/synthetic.md) are training tiles
only: they are never drawn into validation or test, whatever the seed, the
val fraction or the label fraction, and a val set carved from train is
carved from the real tiles alone, so it is the same whether a run includes
synthetic tiles, excludes them or trains on them only (:func:`train_tiles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store import FeatureStore
from pathsegdiff.store.tile_table import full_table, is_synthetic
from pathsegdiff.store.schema import BlockSpec
from pathsegdiff.train_head.store_set import StoreSet


def resolve_selection(
    store: FeatureStore | StoreSet, blocks: tuple[str, ...] | None, timesteps: tuple[int, ...] | None
) -> tuple[tuple[BlockSpec, ...], tuple[int, ...]]:
    """The selected blocks (with their stored shapes) and timesteps; all of them when None."""
    have_b, have_t = store.blocks, store.timesteps
    blocks = tuple(blocks) if blocks else have_b
    timesteps = tuple(int(t) for t in timesteps) if timesteps else have_t
    for b in blocks:
        if b not in have_b:
            raise ConfigError(f"{store.location}: no block {b!r}; the store has {', '.join(have_b)}")
    for t in timesteps:
        if t not in have_t:
            raise ConfigError(f"{store.location}: no timestep {t}; the store has {', '.join(map(str, have_t))}")
    if len(set(blocks)) != len(blocks) or len(set(timesteps)) != len(timesteps):
        raise ConfigError(f"repeated block or timestep in the selection: {list(blocks)}, {list(timesteps)}")
    return tuple(store.schema.features.block(b) for b in blocks), timesteps


def require_labels(store: FeatureStore) -> None:
    if not store.schema.has_labels:
        raise InputError(
            f"{store.location}: this store holds no labels; extract it from a source with masks to train or evaluate"
        )


@dataclass(frozen=True)
class Splits:
    """Tile indices per split, and how validation was obtained."""

    train: np.ndarray  # the real train tiles (val carved out)
    val: np.ndarray
    test: np.ndarray
    val_source: str  # "store" or a sentence saying how it was carved
    synthetic: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # written synthetic tiles

    def get(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, name)


def read_splits(store: FeatureStore | StoreSet, seed: int = 0, val_fraction: float = 0.2) -> Splits:
    """Written tiles by split (of one store, or of several numbered across them), with a validation set carved
    from train if the stores have none."""
    table = store.full_table() if isinstance(store, StoreSet) else full_table(store)
    ok = np.zeros(len(table["split"]), bool)
    ok[store.written()] = True  # the store says which tiles hold complete data
    return split_table(table, ok, seed, val_fraction, str(store.location))


def check_patients(patient: np.ndarray, split: np.ndarray, where: str) -> None:
    """Refuse a patient whose tiles lie in two splits (empty counts as train)."""
    split = np.where(split == "", "train", split)
    for p in np.unique(patient[patient != ""]):
        found = sorted(set(split[patient == p]))
        if len(found) > 1:
            raise InputError(f"{where}: patient {p} has tiles in splits {', '.join(found)}: they would leak between "
                             "them; give all of a patient's slides one split")


def split_table(table: dict, ok: np.ndarray, seed: int = 0, val_fraction: float = 0.2, where: str = "") -> Splits:
    """Splits of the tiles ``ok`` of a tile table (columns ``split``, ``slide_id``, ``patient``)."""
    split = np.asarray(table["split"]).astype(str)
    patient = np.asarray(table.get("patient", np.full(len(split), ""))).astype(str)
    synthetic = is_synthetic(table)
    bad = np.flatnonzero(ok & synthetic & (split != "train") & (split != ""))
    if len(bad):  # TileRecord refuses such rows; a store written by other means may hold them
        raise InputError(f"{where}: {len(bad)} synthetic tiles are marked {split[bad[0]]} (e.g. tile "
                         f"{table['tile_id'][bad[0]] if 'tile_id' in table else bad[0]}); synthetic tiles are "
                         "training tiles only")
    real = ok & ~synthetic
    check_patients(patient[real], split[real], where)  # a synthetic tile is no patient's
    train = np.flatnonzero(real & ((split == "train") | (split == "")))
    val = np.flatnonzero(real & (split == "val"))
    test = np.flatnonzero(real & (split == "test"))
    synthetic = np.flatnonzero(ok & synthetic)
    if len(val) or len(train) < 2:
        return Splits(train, val, test, "store", synthetic)
    slides = np.asarray(table["slide_id"]).astype(str)
    # a patient's slides go together; a slide without a patient is its own group
    groups = np.where(patient[train] != "", np.char.add("patient ", patient[train]), slides[train])
    what = "patients" if (patient[train] != "").any() else "slides"
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    want = max(1, round(val_fraction * len(train)))
    if len(unique) >= 2 and all(unique != ""):
        chosen: list[str] = []
        for s in rng.permutation(unique):
            if sum(int((groups == c).sum()) for c in chosen) >= want or len(chosen) == len(unique) - 1:
                break
            chosen.append(str(s))
        is_val = np.isin(groups, chosen)
        how = f"carved from train: {len(chosen)} of {len(unique)} {what} (seed {seed})"
    elif what == "patients":
        raise InputError(f"{where}: the train tiles come from one patient, so a validation set carved from them "
                         "would share its tiles; declare a val split (a manifest's split column)")
    else:
        is_val = np.zeros(len(train), bool)
        is_val[rng.permutation(len(train))[: min(want, len(train) - 1)]] = True
        how = f"carved from train: {int(is_val.sum())} of {len(train)} tiles (seed {seed})"
    return Splits(train[~is_val], train[is_val], test, how, synthetic)


def parse_label_fraction(value: str | float | int) -> float | int:
    """A fraction in (0, 1] ("0.1", "1"), a percentage ("10%"), or a tile count > 1 ("25")."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            f = float(text[:-1]) / 100
        elif text.isdigit() and int(text) > 1:
            return int(text)
        else:
            f = float(text)
    except ValueError:
        raise ConfigError(f"label fraction {value!r}: give a fraction (0.1), a percentage (10%) or a tile count (25)")
    if not 0 < f <= 1:
        raise ConfigError(f"label fraction {value!r} must be in (0, 1], a percentage, or a tile count > 1")
    return f


def label_subset(train: np.ndarray, fraction: float | int, seed: int = 0) -> np.ndarray:
    """The first floor(fraction * n) (or k) tiles of a seeded permutation of ``train``, in store order."""
    n = len(train)
    k = fraction if isinstance(fraction, int) else math.floor(fraction * n + 1e-9)
    if n == 0:
        raise InputError("the train split is empty: no written tile is marked train")
    if k < 1:
        raise InputError(f"label fraction {fraction} of {n} train tiles leaves no tile; use a larger fraction")
    if k > n:
        raise InputError(f"label fraction asks for {k} tiles but the train split has only {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(train[order[:k]])


SYNTHETIC_CHOICES = ("include", "exclude", "only")


def train_tiles(splits: Splits, fraction: float | int = 1.0, seed: int = 0, synthetic: str = "include"
                ) -> np.ndarray:
    """The tiles a run trains on, in store order.  ``synthetic``: ``include`` the label-fraction subset of the
    real train tiles plus every synthetic tile (with no real train tile, the subset of the synthetic ones);
    ``exclude`` the real subset alone; ``only`` the subset of the synthetic tiles.  Validation and test never
    change with it."""
    if synthetic not in SYNTHETIC_CHOICES:
        raise ConfigError(f"--synthetic {synthetic!r}: choose include, exclude or only")
    if synthetic == "only" or (synthetic == "include" and not len(splits.train) and len(splits.synthetic)):
        if not len(splits.synthetic):
            raise InputError("--synthetic only: the stores hold no written synthetic tile (extract a folder of "
                             "generated tiles with --origin synthetic)")
        return label_subset(splits.synthetic, fraction, seed)
    real = label_subset(splits.train, fraction, seed)
    return real if synthetic == "exclude" else np.union1d(real, splits.synthetic)
