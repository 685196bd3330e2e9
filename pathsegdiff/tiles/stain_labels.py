"""Honest, documented labels for unlabelled H&E: a three-class stain map.

The demo slide has no annotation, so its labels are computed from the pixels:

1. Colour deconvolution (Ruifrok & Johnston, via ``skimage.color.rgb2hed``)
   splits each pixel's optical density into hematoxylin (H) and eosin (E).
2. H, E and the mean optical density are smoothed with a Gaussian (sigma 4 px,
   2 um at 0.5 um/px) so the map follows tissue regions rather than single
   nuclei.
3. Class 0 ``background`` (glass): mean optical density below 0.25.
   Class 1 ``hematoxylin-dense`` (nuclei-rich tissue, e.g. epidermis): H > 1.5 E.
   Class 2 ``eosin-dense`` (stroma, collagen, cytoplasm-rich tissue): the rest.
4. Clean-up: specks and holes under 64 px are absorbed into their surroundings.

These are stain-derived pseudo-labels, not a pathologist's annotation: the
demo shows that the pipeline learns a map from cached features, not that the
model knows histology.  The thresholds were chosen by looking at
``cmu_small_region.svs``; other stains or scanners need other values.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage

from pathsegdiff.tiles.sources import TileSample, TileSource

STAIN_CLASSES = ("background", "hematoxylin-dense", "eosin-dense")
SIGMA_PX = 4.0
GLASS_OD = 0.25
H_OVER_E = 1.5
MIN_REGION_PX = 64


def stain_classes(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 RGB -> (H, W) uint8 labels in ``STAIN_CLASSES`` order."""
    from skimage.color import rgb2hed
    from skimage.morphology import remove_small_holes, remove_small_objects

    img = np.moveaxis(rgb, 0, -1)
    hed = rgb2hed(img)
    h = ndimage.gaussian_filter(hed[..., 0], SIGMA_PX)
    e = ndimage.gaussian_filter(hed[..., 1], SIGMA_PX)
    od = ndimage.gaussian_filter(-np.log(np.maximum(img / 255.0, 1 / 255)).mean(-1), SIGMA_PX)
    tissue = remove_small_holes(od > GLASS_OD, max_size=MIN_REGION_PX)
    tissue = remove_small_objects(tissue, max_size=MIN_REGION_PX)
    h_dense = remove_small_objects(tissue & (h > H_OVER_E * e), max_size=MIN_REGION_PX)
    e_dense = tissue & ~h_dense
    h_dense |= tissue & ~remove_small_objects(e_dense, max_size=MIN_REGION_PX)
    return np.where(tissue, np.where(h_dense, 1, 2), 0).astype(np.uint8)


def block_splits(xy: list[tuple[int, int]], block: int, fractions=(0.7, 0.15, 0.15)) -> list[str]:
    """train/val/test for each (x, y), by spatial blocks ranked by a stable hash.

    Neighbouring tiles share texture; splitting by blocks of several tiles keeps
    held-out tiles from being near-copies of training tiles.  Ranking the blocks
    (rather than thresholding each hash) gives every split its share, so none
    is empty when there are at least three blocks.
    """
    keys = [(x // block, y // block) for x, y in xy]
    blocks = sorted(set(keys), key=lambda k: hashlib.sha256(f"{k[0]}_{k[1]}".encode()).digest())
    n = len(blocks)
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    split_of = {b: ("test" if r < n_test else "val" if r < n_test + n_val else "train") for r, b in enumerate(blocks)}
    return [split_of[k] for k in keys]


class StainLabelledSource(TileSource):
    """Wraps a source without labels: adds stain-derived labels and spatial-block splits."""

    class_names = STAIN_CLASSES

    def __init__(self, inner: TileSource, block_px: int | None = None):
        from dataclasses import replace

        self.inner, self.kind, self.tile_size = inner, f"{inner.kind}+stain-labels", inner.tile_size
        block = block_px or 2 * inner.tile_size
        splits = block_splits([(r.x, r.y) for r in inner.records], block)
        self.records = [r if r.split else replace(r, split=s) for r, s in zip(inner.records, splits)]

    def load(self, i: int) -> TileSample:
        sample = self.inner.load(i)
        return TileSample(sample.rgb, stain_classes(sample.rgb), sample.instances)

    def describe(self) -> dict:
        return {**self.inner.describe(), "labels": "stain_classes (colour deconvolution), see stain_labels.py",
                "kind": self.kind}
