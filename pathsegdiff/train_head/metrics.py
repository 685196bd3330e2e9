"""Pixel metrics from an accumulated confusion matrix, and their spread across slides and patients.

Every number comes from confusion counts summed over all tiles, never from
per-batch averages.  Ignore pixels are dropped before counting.  A class that
appears neither in the labels nor in the predictions has an undefined IoU and
Dice (0/0): it is reported as NaN and left out of mIoU and mDice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class ConfusionMatrix:
    """Counts ``matrix[true, predicted]`` over every labelled pixel seen so far."""

    def __init__(self, n_classes: int, ignore_index: int = 255):
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, predicted: Any, target: Any) -> None:
        """Add pixels; arrays (or tensors) of equal shape holding class ids."""
        p = np.asarray(_numpy(predicted), dtype=np.int64).ravel()
        t = np.asarray(_numpy(target), dtype=np.int64).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction has {p.size} pixels, target {t.size}")
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        if len(t) and (t.max() >= self.n_classes or p.min() < 0 or p.max() >= self.n_classes):
            raise ValueError(f"class ids outside 0..{self.n_classes - 1}")
        self.matrix += np.bincount(t * self.n_classes + p, minlength=self.n_classes**2).reshape(
            self.n_classes, self.n_classes
        )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    @property
    def n_pixels(self) -> int:
        return int(self.matrix.sum())

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else math.nan

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(float)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def dice(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(float)
        denom = self.matrix.sum(0) + self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / denom, np.nan)

    def miou(self) -> float:
        return _nanmean(self.iou())

    def mdice(self) -> float:
        return _nanmean(self.dice())

    def normalised(self) -> np.ndarray:
        """Rows sum to 1 (recall per true class); rows of absent classes are 0."""
        rows = self.matrix.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, self.matrix / np.maximum(rows, 1), 0.0)

    def summary(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The pixel metrics as plain JSON-ready values."""
        iou, dice = self.iou(), self.dice()
        return {
            "pixel_accuracy": self.pixel_accuracy(),
            "miou": self.miou(),
            "mdice": self.mdice(),
            "per_class": {
                name: {"iou": _num(iou[i]), "dice": _num(dice[i]), "pixels": int(self.matrix[i].sum())}
                for i, name in enumerate(class_names)
            },
            "confusion_matrix": self.matrix.tolist(),
            "n_pixels": self.n_pixels,
        }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of finite values (NaN when there are none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()), "max": float(v.max()), "n": int(len(v)),
    }


def group_summary(matrices: dict[str, ConfusionMatrix], key: str = "slides",
                  extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Pixel accuracy, mIoU and mDice of each group (one matrix each, from the group's own pixels), and
    their spread across groups: ``{key: {name: metrics}, "spread": {metric: mean, std, min, max, n}}``.

    ``extra`` adds fields to a group's entry (a patient's slides)."""
    groups = {
        g: {"pixel_accuracy": m.pixel_accuracy(), "miou": m.miou(), "mdice": m.mdice(), "n_pixels": m.n_pixels,
            **(extra or {}).get(g, {})}
        for g, m in sorted(matrices.items())
    }
    return {
        key: groups,
        "spread": {k: spread([v[k] for v in groups.values()]) for k in ("pixel_accuracy", "miou", "mdice")},
    }


def per_slide_summary(matrices: dict[str, ConfusionMatrix]) -> dict[str, Any]:
    """Each slide's metrics and their spread across slides."""
    return group_summary(matrices, "slides")


def per_patient_summary(matrices: dict[str, ConfusionMatrix], slides: dict[str, set[str]]) -> dict[str, Any]:
    """Each patient's metrics (all of its slides' pixels in one matrix), its slides, and the spread across
    patients."""
    return group_summary(matrices, "patients", {p: {"slides": sorted(s)} for p, s in slides.items()})


def _nanmean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else math.nan


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
