"""The unlabelled tiles a pretraining run draws its crops from, held in memory.

Tiles come from anything ``extract`` reads (a :class:`TileSource`: image
folder, slide, cohort) and/or the ``rgb`` array of existing stores.  They
are decoded once into a :class:`TileBank` (uint8, channels first), so each
training step only crops, augments and stacks.  ``keep`` lets a caller drop
tiles before decoding (the ``he-tiny`` recipe drops the demo's test tiles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pathsegdiff.errors import InputError
from pathsegdiff.store import FeatureStore, TileRecord, open_store
from pathsegdiff.tiles.datasets import SourceConfig, open_source
from pathsegdiff.tiles.sources import TileSource


@dataclass
class TileBank:
    """Decoded tiles: ``rgb[i]`` is (3, S_i, S_i) uint8, ``tile_ids[i]`` its id (for precomputed embeddings)."""

    rgb: list[np.ndarray]
    tile_ids: list[str]
    sources: list[dict] = field(default_factory=list)  # describe() of each input, for the model card

    def __post_init__(self) -> None:
        if len(self.rgb) != len(self.tile_ids):
            raise InputError(f"{len(self.rgb)} tiles for {len(self.tile_ids)} tile ids")

    def __len__(self) -> int:
        return len(self.rgb)

    def min_side(self) -> int:
        return min(min(t.shape[1:]) for t in self.rgb) if self.rgb else 0

    def describe(self) -> dict:
        return {"n_tiles": len(self), "pixels": int(sum(t.shape[1] * t.shape[2] for t in self.rgb)),
                "sources": self.sources}


def is_store(path: str | Path) -> bool:
    """A pathsegdiff store: a Zarr v3 directory, or a ``.zip`` made by ``pack``."""
    p = Path(path)
    return (p.is_dir() and (p / "zarr.json").is_file()) or (p.is_file() and p.suffix.lower() == ".zip")


def open_inputs(paths: Sequence[str | Path], source_cfg: SourceConfig | Sequence[SourceConfig] = SourceConfig()
                ) -> list[TileSource | FeatureStore]:
    """Each SOURCE argument as a tile source (what ``extract`` reads) or a store (its ``rgb``).

    Several source configs (e.g. one per magnification) open every non-store path once per config.
    """
    if not paths:
        raise InputError("pretraining needs at least one source (tiles, a slide, a cohort, or a store)")
    configs = [source_cfg] if isinstance(source_cfg, SourceConfig) else list(source_cfg)
    out: list[TileSource | FeatureStore] = []
    for p in paths:
        out += [open_store(p)] if is_store(p) else [open_source(p, cfg) for cfg in configs]
    return out


def _from_source(source: TileSource, keep: Callable[[TileRecord], bool] | None) -> tuple[list, list]:
    rgb, ids = [], []
    for i, record in enumerate(source.records):
        if keep is None or keep(record):
            rgb.append(np.ascontiguousarray(source.load(i).rgb, dtype=np.uint8))
            ids.append(record.tile_id)
    return rgb, ids


def _from_store(store: FeatureStore, keep: Callable[[TileRecord], bool] | None) -> tuple[list, list]:
    if not store.schema.store_rgb:
        raise InputError(f"{store.location}: the store holds no rgb tiles (extracted without them); "
                         "pretrain on its source instead")
    idx = [int(i) for i in store.written() if keep is None or keep(store.record(int(i)))]
    ids = [str(t) for t in store.tile_ids(np.asarray(idx, dtype=np.int64))] if idx else []
    return [np.ascontiguousarray(store.read_rgb(i), dtype=np.uint8) for i in idx], ids


def load_tiles(inputs: Sequence[TileSource | FeatureStore], keep: Callable[[TileRecord], bool] | None = None,
               progress: bool = False) -> TileBank:
    """Decode every (kept) tile of ``inputs`` into a :class:`TileBank`."""
    rgb: list[np.ndarray] = []
    ids: list[str] = []
    described = []
    for inp in inputs if not progress else _bar(inputs):
        got_rgb, got_ids = _from_store(inp, keep) if isinstance(inp, FeatureStore) else _from_source(inp, keep)
        rgb += got_rgb
        ids += got_ids
        what = ({"kind": "store", "location": str(inp.location)} if isinstance(inp, FeatureStore)
                else inp.describe())
        described.append({**what, "tiles_used": len(got_ids)})
    if not rgb:
        raise InputError("no tiles to pretrain on (every source was empty or excluded)")
    return TileBank(rgb, ids, described)


def _bar(items):
    from tqdm import tqdm

    return tqdm(items, desc="reading tiles", unit="source", leave=False)
