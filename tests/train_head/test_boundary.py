"""Boundary F1 within 2 px: exact on a perfect map, tolerant of a 1-2 px shift, strict beyond, blind to ignore."""

from __future__ import annotations

import numpy as np

from pathsegdiff.train_head.boundary import BoundaryF1, class_boundary

IGNORE = 255


def halves(split_at: int, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), np.int64)
    m[:, split_at:] = 1
    return m


def score(pred: np.ndarray, target: np.ndarray, tolerance: float = 2.0) -> float:
    b = BoundaryF1(2, IGNORE, tolerance)
    b.update(pred, target)
    return b.summary(("a", "b"))["boundary_f1"]


def test_a_perfect_map_scores_one_and_a_shift_within_the_tolerance_too():
    target = halves(16)
    assert score(target, target) == 1.0
    assert score(halves(18), target) == 1.0  # 2 px off
    assert score(halves(19), target) == 0.0  # 3 px off: no boundary pixel within 2 px
    assert 0 < score(halves(19), target, tolerance=3.0) <= 1.0


def test_boundaries_only_between_labelled_classes():
    target = halves(16)
    target[:, 24:] = IGNORE  # the edge of the labelled region is no boundary
    b = class_boundary(target, 1, IGNORE)
    assert b[:, 16].all() and not b[:, 23].any() and b.sum() == 32
    pred = halves(16)
    pred[:, 20:] = 0  # a predicted edge at column 20, inside the labelled part: 4 px from the true one
    assert score(pred, target) < 1.0
    pred = halves(16)
    pred[:, 24:] = 0  # differs only where the target is ignored
    assert score(pred, target) == 1.0


def test_a_class_without_boundaries_is_left_out():
    target = np.zeros((8, 8), np.int64)
    b = BoundaryF1(3, IGNORE)
    b.update(target, target)
    s = b.summary(("a", "b", "c"))
    assert s["boundary_f1"] is None and s["boundary_f1_per_class"] == {"a": None, "b": None, "c": None}
