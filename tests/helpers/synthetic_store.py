"""Small synthetic stores whose features encode the label plus noise.

Labels are random blobs (the argmax of a smooth random field per class).
Each block's features at each timestep are the one-hot label map average-
pooled to the block's resolution, mixed into C channels by a fixed random
matrix, plus Gaussian noise.  ``shuffled=True`` pairs every tile's features
with another tile's labels, so nothing is learnable beyond class frequencies.
"""

from __future__ import annotations

import numpy as np
import torch

from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store

CLASSES = ("tumor", "stroma", "other")
BLOCKS = (BlockSpec("up1", 8, 8, 8), BlockSpec("up2", 6, 16, 16))
TIMESTEPS = (50, 150)
TILE = 32


def blob_labels(rng: np.random.Generator, n: int, k: int, size: int) -> np.ndarray:
    """(n, size, size) uint8 class blobs."""
    coarse = torch.from_numpy(rng.normal(size=(n, k, 4, 4)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return field.argmax(1).numpy().astype(np.uint8)


def encode(labels: np.ndarray, k: int, block: BlockSpec, mix: np.ndarray, noise: float,
           rng: np.random.Generator) -> np.ndarray:
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), k).permute(0, 3, 1, 2).float()
    pooled = torch.nn.functional.adaptive_avg_pool2d(onehot, (block.height, block.width)).numpy()
    mixed = np.einsum("ck,nkhw->nchw", mix, pooled)
    return (mixed + noise * rng.normal(size=mixed.shape)).astype(np.float32)


def build_store(
    path,
    n_tiles: int = 40,
    splits: tuple[int, int, int] = (24, 8, 8),
    noise: float = 0.6,
    shuffled: bool = False,
    labels: bool = True,
    instances: bool = False,
    seed: int = 0,
    weights_sha256: str = "0" * 64,
    n_slides: int = 5,
    unwritten: int = 0,
    compute_dtype: str = "fp32",
    rgb: bool = True,
):
    """Create and fill a store; the last ``unwritten`` tiles stay todo."""
    rng = np.random.default_rng(seed)
    names = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    names += [""] * (n_tiles - len(names))
    tiles = [TileRecord(f"t{i:03d}", f"S{i % n_slides}", 0, 0, 0.5, names[i]) for i in range(n_tiles)]
    spec = FeatureSpec("synthetic", weights_sha256, BLOCKS, TIMESTEPS, tile_size=TILE, compute_dtype=compute_dtype)
    schema = StoreSchema(spec, n_tiles=n_tiles, class_names=CLASSES if labels else (),
                         store_instances=instances and labels, store_rgb=rgb)
    lab = blob_labels(rng, n_tiles, len(CLASSES), TILE)
    shown = lab[np.roll(np.arange(n_tiles), 1)] if shuffled else lab
    mix_rng = np.random.default_rng(1234)  # the same encoding for every store
    feats = {t: {b.name: encode(lab, len(CLASSES), b, mix_rng.normal(size=(b.channels, len(CLASSES))),
                                noise, rng) for b in BLOCKS} for t in TIMESTEPS}
    palette = np.array([[200, 60, 120], [230, 170, 200], [120, 90, 200]], np.uint8)
    colours = palette[lab].transpose(0, 3, 1, 2)  # the features' labels as colours (what rgb-fcn can read)
    inst = np.stack([_components(m) for m in shown]) if instances else None
    with create_store(path, schema, tiles) as w:
        n = n_tiles - unwritten
        w.write(range(n), TileBatch(
            features={t: {b: v[:n] for b, v in d.items()} for t, d in feats.items()},
            labels=shown[:n] if labels else None, rgb=colours[:n] if rgb else None,
            instances=inst[:n] if instances else None,
        ))
    return str(path)


def _components(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.label(mask != 0)[0].astype(np.int32)
