"""Boundary F1 within a pixel tolerance (the BF score of Csurka et al., BMVC 2013), counts summed over tiles.

A pixel of class c is on c's boundary when one of its 4 neighbours inside the
tile is labelled with another class (ignore pixels, and the tile's edge, make
no boundary).  The prediction is cut to the labelled pixels first.  A
predicted boundary pixel is matched when a true boundary pixel of the same
class lies within ``tolerance`` pixels (Euclidean), and the other way round;
precision and recall of class c come from the matched and total counts summed
over every tile, F1 = 2PR / (P + R).  A class with no boundary pixel in either
map has no F1 and is left out of the mean; one with boundaries on one side
only scores 0.  Boundaries weigh every pixel of a contour once, so the score
measures how well edges are placed, which mIoU (dominated by region
interiors) hardly sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage


def class_boundary(x: np.ndarray, c: int, ignore_index: int) -> np.ndarray:
    """(H, W) bool: pixels of class c with a 4-neighbour of another labelled class."""
    mine = x == c
    other = (x != c) & (x != ignore_index)
    near = np.zeros_like(mine)
    near[1:] |= other[:-1]
    near[:-1] |= other[1:]
    near[:, 1:] |= other[:, :-1]
    near[:, :-1] |= other[:, 1:]
    return mine & near


def _matched(a: np.ndarray, b: np.ndarray, tolerance: float) -> int:
    """Pixels of boundary ``a`` within ``tolerance`` of boundary ``b``."""
    if not a.any() or not b.any():
        return 0
    return int((ndimage.distance_transform_edt(~b)[a] <= tolerance).sum())


class BoundaryF1:
    """Per-class boundary precision/recall counts over every tile seen so far."""

    def __init__(self, n_classes: int, ignore_index: int = 255, tolerance: float = 2.0):
        self.n_classes, self.ignore_index, self.tolerance = n_classes, ignore_index, tolerance
        self.counts = np.zeros((n_classes, 4), np.int64)  # predicted matched, predicted, true matched, true

    def update(self, predicted: np.ndarray, target: np.ndarray) -> None:
        """Add one tile: class ids (H, W) each."""
        target = np.asarray(target)
        predicted = np.where(target == self.ignore_index, self.ignore_index, np.asarray(predicted))
        for c in range(self.n_classes):
            p, t = class_boundary(predicted, c, self.ignore_index), class_boundary(target, c, self.ignore_index)
            self.counts[c] += (_matched(p, t, self.tolerance), int(p.sum()), _matched(t, p, self.tolerance),
                               int(t.sum()))

    def per_class(self) -> np.ndarray:
        """F1 per class (NaN where neither map has a boundary of that class)."""
        pm, pt, tm, tt = self.counts.T.astype(float)
        out = np.full(self.n_classes, math.nan)
        for c in range(self.n_classes):
            if pt[c] + tt[c] == 0:
                continue
            precision = pm[c] / pt[c] if pt[c] else 0.0
            recall = tm[c] / tt[c] if tt[c] else 0.0
            out[c] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return out

    def summary(self, class_names: Sequence[str]) -> dict[str, Any]:
        f1 = self.per_class()
        finite = f1[np.isfinite(f1)]
        return {"boundary_f1": float(finite.mean()) if len(finite) else None,
                "boundary_tolerance_px": self.tolerance,
                "boundary_f1_per_class": {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(class_names, f1)}}
