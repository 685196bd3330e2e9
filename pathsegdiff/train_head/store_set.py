"""Several stores read as one: a cohort extracted in parts, trained and evaluated together.

The stores must hold the same features (every identity field: model,
weights, blocks and their shapes, timesteps, noise, conditioning, tile size,
storage) and the same classes and ignore index; the first difference is
refused in one line that names both stores.  Tiles are numbered across the
stores in the order given: tile ``i`` is tile ``i - offsets[k]`` of store
``k``.  The tile table is the stores' tables one after another (with their
cohort columns, ``origin`` and a ``store`` column), so splits and per-slide or
per-patient metrics see one cohort; a patient in two stores is one patient,
and a store of synthetic tiles (``extract --origin synthetic``) trains with
a store of real ones without ever entering validation or test (splits.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from pathsegdiff.errors import ConfigError
from pathsegdiff.store import FeatureStore, open_store
from pathsegdiff.store.tile_table import full_table

FIRST_FIELDS = ("blocks", "timesteps")  # what users choose, so named first when they differ


def as_wheres(where: str | Sequence[str]) -> tuple[str, ...]:
    return (str(where),) if isinstance(where, (str, bytes)) or not isinstance(where, Sequence) else tuple(map(str, where))


def check_compatible(stores: Sequence[FeatureStore]) -> None:
    """Refuse stores whose features or classes differ from the first one's (one line, both named)."""
    a = stores[0]
    fa = dict(a.meta.get("identity_fields", {}))
    for b in stores[1:]:
        fb = dict(b.meta.get("identity_fields", {}))
        keys = [*FIRST_FIELDS, *sorted((set(fa) | set(fb)) - set(FIRST_FIELDS))]
        diff = [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)]
        diff += [(k, getattr(a.schema, k), getattr(b.schema, k)) for k in ("class_names", "ignore_index")
                 if getattr(a.schema, k) != getattr(b.schema, k)]
        if diff:
            k, va, vb = diff[0]
            more = f" (and {len(diff) - 1} more field{'s' * (len(diff) > 2)})" if len(diff) > 1 else ""
            raise ConfigError(f"{b.location}: its {k} differ from {a.location}'s: {vb!r} against {va!r}{more}; "
                              "train and evaluate over stores of the same blocks, timesteps, features and classes")


class StoreSet:
    """Stores read as one; the first store's schema, identity and provenance stand for the set."""

    def __init__(self, wheres: Sequence[str]):
        if not wheres:
            raise ConfigError("give at least one store")
        self.wheres = tuple(str(w) for w in wheres)
        if len(set(self.wheres)) != len(self.wheres):
            raise ConfigError(f"a store is given twice: {', '.join(self.wheres)}")
        self.stores = [open_store(w) for w in self.wheres]
        check_compatible(self.stores)
        self.offsets = list(np.cumsum([0] + [s.n_tiles for s in self.stores]).tolist())
        first = self.stores[0]
        self.schema, self.meta, self.identity, self.provenance = first.schema, first.meta, first.identity, first.provenance
        self.blocks, self.timesteps = first.blocks, first.timesteps

    @property
    def location(self) -> str:
        return " + ".join(str(s.location) for s in self.stores)

    @property
    def n_tiles(self) -> int:
        return self.offsets[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(store, tile index in it) of tile ``i`` of the set."""
        k = bisect.bisect_right(self.offsets, int(i)) - 1
        return k, int(i) - self.offsets[k]

    def full_table(self) -> dict[str, np.ndarray]:
        """The tile tables one after another, with the cohort columns, ``status`` and ``store`` (its position)."""
        tables = [full_table(s) for s in self.stores]
        out = {c: np.concatenate([t[c] for t in tables]) for c in tables[0]}
        out["store"] = np.concatenate([np.full(s.n_tiles, k) for k, s in enumerate(self.stores)])
        return out

    def table(self) -> dict[str, np.ndarray]:
        return self.full_table()

    def written(self) -> np.ndarray:
        return np.concatenate([s.written() + off for s, off in zip(self.stores, self.offsets)])

    def tile_ids(self) -> np.ndarray:
        return np.concatenate([s.tile_ids() for s in self.stores])


def open_stores(where: str | Sequence[str]) -> StoreSet:
    """One store or several, as one :class:`StoreSet`."""
    return StoreSet(as_wheres(where))
