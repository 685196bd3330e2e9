"""GlaS object-level metrics: object F1, object Dice, object Hausdorff.

Definitions follow the GlaS challenge (Sirinukunwattana et al., Medical Image
Analysis 2017):

* F1: a segmented object is a true positive when it covers at least 50 % of
  a ground-truth object (each ground-truth object is matched at most once);
  unmatched segmented objects are false positives, unmatched ground-truth
  objects false negatives.
* Object Dice: 1/2 [sum_i g_i D(G_i, S*(G_i)) + sum_j s_j D(G*(S_j), S_j)],
  with g_i, s_j the area shares of each object among its own set and X*(Y)
  the object of the other set that overlaps Y most (empty when none does,
  giving D = 0).
* Object Hausdorff: the same weighting over Hausdorff distances between pixel
  sets; an object that overlaps nothing is paired with the nearest object of
  the other set (smallest Hausdorff distance), as the official code does.

Instances are integer masks (0 = background); predictions are turned into
instances by connected components (``scipy.ndimage.label``, 4-connectivity).
When an image has no object in either mask its scores are undefined (NaN)
and left out; when only one mask has objects, F1 and Dice are 0 and the
Hausdorff distance is undefined (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff


def instances_from_mask(foreground: np.ndarray) -> np.ndarray:
    """Connected components of a boolean mask as instance ids 1..n (0 = background)."""
    labelled, _ = ndimage.label(np.asarray(foreground, dtype=bool))
    return labelled.astype(np.int32)


def _objects(instances: np.ndarray) -> list[np.ndarray]:
    ids = np.unique(instances)
    return [instances == i for i in ids[ids != 0]]


def _dice(a: np.ndarray, b: np.ndarray | None) -> float:
    if b is None:
        return 0.0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = np.argwhere(a), np.argwhere(b)
    return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])


def _best_overlap(obj: np.ndarray, others: list[np.ndarray]) -> np.ndarray | None:
    overlaps = [np.logical_and(obj, o).sum() for o in others]
    if not overlaps or max(overlaps) == 0:
        return None
    return others[int(np.argmax(overlaps))]


def f1_counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image from two instance masks."""
    gts, segs = _objects(truth), _objects(predicted)
    matched: set[int] = set()
    tp = 0
    for s in segs:
        for i, g in enumerate(gts):
            if i not in matched and np.logical_and(s, g).sum() >= 0.5 * g.sum():
                matched.add(i)
                tp += 1
                break
    return tp, len(segs) - tp, len(gts) - tp


def object_dice(truth: np.ndarray, predicted: np.ndarray) -> float:
    gts, segs = _objects(truth), _objects(predicted)
    if not gts and not segs:
        return math.nan
    if not gts or not segs:
        return 0.0
    g_area, s_area = sum(g.sum() for g in gts), sum(s.sum() for s in segs)
    from_truth = sum(g.sum() / g_area * _dice(g, _best_overlap(g, segs)) for g in gts)
    from_seg = sum(s.sum() / s_area * _dice(s, _best_overlap(s, gts)) for s in segs)
    return float(0.5 * (from_truth + from_seg))


def object_hausdorff(truth: np.ndarray, predicted: np.ndarray) -> float:
    gts, segs = _objects(truth), _objects(predicted)
    if not gts or not segs:
        return math.nan

    def paired(obj: np.ndarray, others: list[np.ndarray]) -> float:
        best = _best_overlap(obj, others)
        if best is not None:
            return _hausdorff(obj, best)
        return min(_hausdorff(obj, o) for o in others)

    g_area, s_area = sum(g.sum() for g in gts), sum(s.sum() for s in segs)
    from_truth = sum(g.sum() / g_area * paired(g, segs) for g in gts)
    from_seg = sum(s.sum() / s_area * paired(s, gts) for s in segs)
    return float(0.5 * (from_truth + from_seg))


@dataclass
class ObjectMetrics:
    """Accumulates object scores over images: F1 from pooled counts, Dice and Hausdorff averaged per image."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    dice: list[float] = field(default_factory=list)
    hausdorff: list[float] = field(default_factory=list)

    def update(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Add one image: ground-truth instances and predicted instances (0 = background)."""
        tp, fp, fn = f1_counts(truth, predicted)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.dice.append(object_dice(truth, predicted))
        self.hausdorff.append(object_hausdorff(truth, predicted))

    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else math.nan

    def summary(self) -> dict[str, float | int | None]:
        def mean(v: list[float]) -> float | None:
            v = [x for x in v if np.isfinite(x)]
            return float(np.mean(v)) if v else None

        f1 = self.f1()
        return {
            "object_f1": None if math.isnan(f1) else f1, "object_dice": mean(self.dice),
            "object_hausdorff": mean(self.hausdorff), "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "n_images": len(self.dice),
        }
