"""Small deterministic stores for the store tests (importable by child processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store

TILE = 32
N_TILES = 12
CLASSES = ("background", "tissue", "other")


def spec(**over) -> FeatureSpec:
    kw = dict(
        model_id="synthetic", weights_sha256="0" * 64,
        blocks=(BlockSpec("up1", 6, 8, 8), BlockSpec("up2", 4, 16, 16)), timesteps=(50, 150),
        noise_seed=0, tile_size=TILE,
    )
    kw.update(over)
    return FeatureSpec(**kw)


def schema(n_tiles: int | None = N_TILES, **over) -> StoreSchema:
    return StoreSchema(spec(**over), n_tiles=n_tiles, class_names=CLASSES, ssl_dim=5)


def records(n: int = N_TILES, start: int = 0) -> list[TileRecord]:
    splits = ("train", "val", "test")
    return [TileRecord(f"tile{i:03d}", f"slide{i % 2}", 32 * i, 0, 0.5, splits[i % 3]) for i in range(start, start + n)]


def tile_batch(indices, sch: StoreSchema | None = None) -> TileBatch:
    """Arrays for ``indices`` that depend only on the tile index (so any split gives the same store)."""
    sch = sch or schema()
    feats: dict[int, dict[str, np.ndarray]] = {}
    for t in sch.features.timesteps:
        feats[t] = {}
        for b in sch.features.blocks:
            feats[t][b.name] = np.stack(
                [np.random.default_rng([i, t, b.channels]).normal(size=b.shape).astype(np.float32) for i in indices]
            )
    s = sch.tile_size
    labels = np.stack([np.random.default_rng([i, 1]).integers(0, 3, (s, s), dtype=np.uint8) for i in indices])
    labels[:, :2, :2] = sch.ignore_index
    rgb = np.stack([np.random.default_rng([i, 2]).integers(0, 256, (3, s, s), dtype=np.uint8) for i in indices])
    ssl = np.stack([np.random.default_rng([i, 3]).normal(size=sch.ssl_dim).astype(np.float32) for i in indices])
    return TileBatch(feats, labels=labels, rgb=rgb, ssl=ssl)


def written_store(path: Path, n_written: int) -> Path:
    """A store of the synthetic schema with its first ``n_written`` tiles written (the rest todo)."""
    with create_store(path, schema(), records()) as w:
        w.write(range(n_written), tile_batch(range(n_written)))
    return path
