"""GlaS object metrics on hand-made instance masks whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pathsegdiff.train_head.object_metrics import (
    ObjectMetrics,
    f1_counts,
    instances_from_mask,
    object_dice,
    object_hausdorff,
)


def two_glands():
    """Ground truth A (4x4 at rows 0-3, cols 0-3) and B (2x2 at rows 6-7, cols 6-7) on a 10x10 grid."""
    g = np.zeros((10, 10), np.int32)
    g[0:4, 0:4] = 1
    g[6:8, 6:8] = 2
    return g


def half_and_stray():
    """S1 covers exactly half of A (rows 0-3, cols 0-1); S2 is one pixel at (9, 0) touching nothing."""
    s = np.zeros((10, 10), np.int32)
    s[0:4, 0:2] = 1
    s[9, 0] = 2
    return s


def test_perfect_segmentation():
    g = two_glands()
    assert f1_counts(g, g) == (2, 0, 0)
    assert object_dice(g, g) == pytest.approx(1.0)
    assert object_hausdorff(g, g) == pytest.approx(0.0)


def test_instance_ids_need_not_match():
    g = two_glands()
    s = np.where(g == 1, 7, np.where(g == 2, 3, 0))
    assert f1_counts(g, s) == (2, 0, 0) and object_dice(g, s) == pytest.approx(1.0)


def test_half_overlap_counts_and_stray_object():
    g, s = two_glands(), half_and_stray()
    # S1 covers 8 of A's 16 pixels (exactly 50 %): TP; S2: FP; B: FN.
    assert f1_counts(g, s) == (1, 1, 1)
    # Dice: G side 16/20 * D(A,S1) + 4/20 * 0; S side 8/9 * D(A,S1) + 1/9 * 0; D(A,S1) = 16/24.
    d = 2 / 3
    assert object_dice(g, s) == pytest.approx(0.5 * (0.8 * d + 8 / 9 * d))
    # Hausdorff: H(A,S1) = 2 (A's column 3 is 2 px from S1).  B and S2 overlap nothing and take
    # their nearest object: H(B,S1) = sqrt(72), H(B,S2) = sqrt(58) -> sqrt(58); H(S2,A) = sqrt(90),
    # H(S2,B) = sqrt(58) -> sqrt(58).
    r58 = math.sqrt(58)
    want = 0.5 * (0.8 * 2 + 0.2 * r58 + 8 / 9 * 2 + 1 / 9 * r58)
    assert object_hausdorff(g, s) == pytest.approx(want)


def test_less_than_half_overlap_is_not_a_match():
    g = np.zeros((6, 6), np.int32)
    g[0:4, 0:4] = 1  # 16 px
    s = np.zeros((6, 6), np.int32)
    s[0:4, 0:1] = 1
    s[0:3, 1] = 1  # 7 px inside the object: 43.75 %
    assert f1_counts(g, s) == (0, 1, 1)


def test_merged_prediction_matches_one_gland():
    g = np.zeros((4, 8), np.int32)
    g[0:2, 0:2] = 1
    g[0:2, 5:7] = 2
    s = np.zeros((4, 8), np.int32)
    s[0:2, 0:7] = 1  # one object bridging both glands
    assert f1_counts(g, s) == (1, 0, 1)
    m = ObjectMetrics()
    m.update(g, s)
    assert m.f1() == pytest.approx(2 / 3)


def test_empty_cases():
    empty = np.zeros((5, 5), np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 1
    assert f1_counts(empty, empty) == (0, 0, 0)
    assert math.isnan(object_dice(empty, empty)) and math.isnan(object_hausdorff(empty, empty))
    assert f1_counts(empty, one) == (0, 1, 0) and object_dice(empty, one) == 0.0
    assert math.isnan(object_hausdorff(one, empty))


def test_pooled_f1_and_mean_dice():
    m = ObjectMetrics()
    m.update(two_glands(), two_glands())
    m.update(two_glands(), half_and_stray())
    assert (m.tp, m.fp, m.fn) == (3, 1, 1)
    s = m.summary()
    assert s["object_f1"] == pytest.approx(6 / 8)
    assert s["object_dice"] == pytest.approx((1 + 0.5 * (0.8 * 2 / 3 + 8 / 9 * 2 / 3)) / 2)
    assert s["n_images"] == 2


def test_connected_components_use_4_connectivity():
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
    inst = instances_from_mask(mask)
    assert inst.max() == 2 and inst[1, 1] == inst[1, 2] != inst[0, 0]
