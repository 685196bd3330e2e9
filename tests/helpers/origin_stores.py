"""Small learnable stores (``synthetic_store``'s encoding) that hold real tiles, synthetic tiles, or both."""

from __future__ import annotations

import numpy as np

from helpers.synthetic_store import BLOCKS, CLASSES, TILE, TIMESTEPS, blob_labels, encode
from pathsegdiff.store import FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store


def origin_store(path, real: tuple[int, int, int] = (0, 0, 0), synthetic: int = 0, seed: int = 0) -> str:
    """``real`` (train, val, test) tiles on slides R0..R3, then ``synthetic`` tiles (split empty) on G0, G1."""
    splits = ["train"] * real[0] + ["val"] * real[1] + ["test"] * real[2]
    records = [TileRecord(f"r{i:03d}", f"R{i % 4}", 0, 0, 0.5, s) for i, s in enumerate(splits)]
    records += [TileRecord(f"g{i:03d}", f"G{i % 2}", 0, 0, 0.5, "", origin="synthetic") for i in range(synthetic)]
    n, rng = len(records), np.random.default_rng(seed)
    labels = blob_labels(rng, n, len(CLASSES), TILE)
    mix = np.random.default_rng(1234)  # the encoding of every synthetic_store
    feats = {t: {b.name: encode(labels, len(CLASSES), b, mix.normal(size=(b.channels, len(CLASSES))), 0.6, rng)
                 for b in BLOCKS} for t in TIMESTEPS}
    spec = FeatureSpec("synthetic", "0" * 64, BLOCKS, TIMESTEPS, tile_size=TILE)
    with create_store(path, StoreSchema(spec, n_tiles=n, class_names=CLASSES), records) as w:
        w.write(range(n), TileBatch(feats, labels=labels, rgb=np.zeros((n, 3, TILE, TILE), np.uint8)))
    return str(path)
