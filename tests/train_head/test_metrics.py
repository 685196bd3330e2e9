"""Pixel metrics against a hand-computed confusion matrix and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pathsegdiff.train_head.metrics import ConfusionMatrix, per_patient_summary, per_slide_summary, spread


def test_hand_computed_confusion_matrix():
    # 3 classes, one ignore pixel (255).  Pairs (true, pred):
    # (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,2) (2,0) (255,1)
    target = np.array([[0, 0, 0], [1, 1, 2], [2, 2, 255]], np.uint8)
    pred = np.array([[0, 0, 1], [1, 2, 2], [2, 0, 1]], np.uint8)
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert cm.pixel_accuracy() == pytest.approx(5 / 8)
    # IoU_c = tp / (row + col - tp): 2/(3+3-2), 1/(2+2-1), 2/(3+3-2)
    np.testing.assert_allclose(cm.iou(), [0.5, 1 / 3, 0.5])
    # Dice_c = 2 tp / (row + col): 4/6, 2/4, 4/6
    np.testing.assert_allclose(cm.dice(), [2 / 3, 0.5, 2 / 3])
    assert cm.miou() == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert cm.mdice() == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_accumulating_batches_equals_one_update():
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 4, (6, 16, 16)), rng.integers(0, 4, (6, 16, 16))
    whole, parts = ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(p, t)
    for i in range(6):
        parts.update(p[i], t[i])
    assert (whole.matrix == parts.matrix).all()
    # The mean of per-batch mIoUs is not the mIoU: the accumulated matrix is what counts.
    per_batch = np.mean([_miou(p[i], t[i]) for i in range(6)])
    assert whole.miou() != pytest.approx(per_batch, abs=1e-9)


def _miou(p, t):
    cm = ConfusionMatrix(4)
    cm.update(p, t)
    return cm.miou()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn_on_random_masks(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    k = 5
    target = rng.integers(0, k, (4, 32, 32)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, k, (4, 32, 32)).astype(np.uint8)
    # Make agreement better than chance so the numbers are not all alike.
    agree = rng.random(target.shape) < 0.5
    pred[agree & (target != 255)] = target[agree & (target != 255)]
    cm = ConfusionMatrix(k, 255)
    cm.update(pred, target)
    keep = target.ravel() != 255
    t, p = target.ravel()[keep], pred.ravel()[keep]
    assert (cm.matrix == sk.confusion_matrix(t, p, labels=range(k))).all()
    assert cm.pixel_accuracy() == pytest.approx(sk.accuracy_score(t, p))
    np.testing.assert_allclose(cm.iou(), sk.jaccard_score(t, p, labels=range(k), average=None))
    np.testing.assert_allclose(cm.dice(), sk.f1_score(t, p, labels=range(k), average=None))
    assert cm.miou() == pytest.approx(sk.jaccard_score(t, p, labels=range(k), average="macro"))
    assert cm.mdice() == pytest.approx(sk.f1_score(t, p, labels=range(k), average="macro"))


def test_absent_class_is_nan_and_left_out_of_means():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    iou = cm.iou()
    assert math.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 0.5) / 2)
    s = cm.summary(["a", "b", "c"])
    assert s["per_class"]["c"]["iou"] is None and s["per_class"]["a"]["pixels"] == 2


def test_all_ignore_gives_nan_not_an_error():
    cm = ConfusionMatrix(2, 7)
    cm.update(np.array([0, 1]), np.array([7, 7]))
    assert cm.n_pixels == 0 and math.isnan(cm.pixel_accuracy()) and math.isnan(cm.miou())


def test_rejects_class_ids_out_of_range():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError):
        cm.update(np.array([0, 2]), np.array([0, 1]))


def test_normalised_rows_sum_to_one():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 1]))
    n = cm.normalised()
    np.testing.assert_allclose(n.sum(1), [1, 1, 0])
    np.testing.assert_allclose(n[0], [0.5, 0.5, 0])


def test_per_slide_metrics_and_spread():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 1]))  # perfect
    b.update(np.array([0, 0, 0, 0]), np.array([0, 1, 1, 1]))  # accuracy 0.25
    out = per_slide_summary({"s2": b, "s1": a})
    assert list(out["slides"]) == ["s1", "s2"]
    acc = out["spread"]["pixel_accuracy"]
    assert acc["mean"] == pytest.approx(0.625) and acc["min"] == 0.25 and acc["max"] == 1.0 and acc["n"] == 2
    assert acc["std"] == pytest.approx(np.std([1.0, 0.25], ddof=1))
    assert spread([float("nan")])["n"] == 0


def test_per_patient_metrics_pool_a_patients_slides():
    """A patient is scored on all of its slides' pixels together, not as the mean of its slides."""
    p1, p2 = ConfusionMatrix(2), ConfusionMatrix(2)
    p1.update(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 1]))  # slide a: perfect
    p1.update(np.array([1, 1, 1, 1]), np.array([0, 0, 0, 0]))  # slide b: all wrong
    p2.update(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    out = per_patient_summary({"P2": p2, "P1": p1}, {"P1": {"b", "a"}, "P2": {"c"}})
    assert list(out["patients"]) == ["P1", "P2"] and out["patients"]["P1"]["slides"] == ["a", "b"]
    # P1 pooled: class 0 tp 1, union 1 + 4 = 5 -> 0.2; class 1 tp 3, union 3 + 4 = 7 -> 3/7
    assert out["patients"]["P1"]["miou"] == pytest.approx((1 / 5 + 3 / 7) / 2)
    assert out["patients"]["P1"]["pixel_accuracy"] == pytest.approx(4 / 8) and out["patients"]["P2"]["miou"] == 1.0
    m = out["spread"]["miou"]
    assert m["n"] == 2 and m["mean"] == pytest.approx(((1 / 5 + 3 / 7) / 2 + 1) / 2) and m["max"] == 1.0
