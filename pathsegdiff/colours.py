"""One colour per class id, for every picture of classes: run overlays, the slide overlay, QC thumbnails, GeoJSON.

Class k is ``CLASS_COLOURS[k % 20]``: matplotlib's tab10 in the order the slide
overlay has always used (blue, red, green, orange, ...), then tab20's lighter
shade of each, so up to 20 classes get distinct colours.  :func:`paint`
blends them over an image the same way everywhere.  It sits below every
layer that draws (tiles' QC, train_head's plots, predict's overlays), so one
map serves them all.
"""

from __future__ import annotations

import numpy as np

CLASS_COLOURS = np.array(
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [140, 86, 75],
     [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
     [174, 199, 232], [255, 152, 150], [152, 223, 138], [255, 187, 120], [197, 176, 213], [196, 156, 148],
     [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229]], np.uint8)


def class_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB, row k the colour of class k."""
    return CLASS_COLOURS[np.arange(n) % len(CLASS_COLOURS)]


def class_colour(k: int) -> tuple[int, int, int]:
    r, g, b = CLASS_COLOURS[k % len(CLASS_COLOURS)].tolist()
    return r, g, b


def paint(rgb: np.ndarray, mask: np.ndarray, skip: int, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 RGB with each pixel's class colour blended in; pixels of class ``skip`` stay as they are."""
    out = rgb.astype(np.float32)
    hit = mask != skip
    out[hit] = (1 - alpha) * out[hit] + alpha * class_colours(256)[mask[hit]]
    return out.astype(np.uint8)
