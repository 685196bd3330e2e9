"""The map against stored labels, when the stores hold some: a diagnostic only, never used to fit.

Counts go into one (k, classes) contingency table, tile by tile: each map is
resized to the labels' grid by nearest neighbour and pixels labelled with the
ignore index are left out.  From it come the adjusted Rand index (Hubert and
Arabie; 0 for a map unrelated to the labels, 1 for the same partition up to
renaming, which ids a cluster gets does not matter) and each cluster's label
composition (the fraction of its labelled pixels in each class).
"""

from __future__ import annotations

import numpy as np


def nearest(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, h, w) -> (B, height, width) by nearest neighbour (pixel centres)."""
    _, h, w = maps.shape
    rows = ((np.arange(height) + 0.5) * h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * w / width).astype(np.int64)
    return maps[:, rows[:, None], cols[None, :]]


class LabelAgreement:
    def __init__(self, k: int, class_names: tuple[str, ...], ignore_index: int):
        self.class_names, self.ignore_index = class_names, ignore_index
        self.table = np.zeros((k, len(class_names)), np.int64)

    def add(self, maps: np.ndarray, labels: np.ndarray) -> None:
        """``maps`` (B, h, w) cluster ids; ``labels`` (B, H, W) class ids or the ignore index."""
        up = nearest(maps, *labels.shape[1:])
        keep = labels != self.ignore_index
        k, c = self.table.shape
        self.table += np.bincount(up[keep].astype(np.int64) * c + labels[keep], minlength=k * c).reshape(k, c)

    def summary(self) -> dict:
        n = int(self.table.sum())
        comp = []
        for i, row in enumerate(self.table):
            total = int(row.sum())
            frac = {name: round(float(v / total), 4) if total else 0.0 for name, v in zip(self.class_names, row)}
            comp.append({"cluster": i, "labelled_pixels": total, "classes": frac})
        return {"adjusted_rand_index": adjusted_rand_index(self.table) if n else None, "labelled_pixels": n,
                "class_names": list(self.class_names), "composition": comp,
                "note": "diagnostic only: the labels were not used to fit the map"}


def _pairs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float((x * (x - 1) / 2).sum())


def adjusted_rand_index(table: np.ndarray) -> float:
    """ARI of a contingency table (rows: one partition, columns: the other), as sklearn's adjusted_rand_score."""
    n = table.sum()
    index, rows, cols = _pairs(table), _pairs(table.sum(1)), _pairs(table.sum(0))
    total = n * (n - 1) / 2
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2
    if best == expected:  # both partitions trivial (one group each, or all singletons)
        return 1.0
    return float((index - expected) / (best - expected))
