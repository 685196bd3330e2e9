"""Losses and class weights: focal loss and weighted cross-entropy agree where they must; ``auto`` weights are the
inverse pixel frequencies of the training tiles (a property test over small random stores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathsegdiff.errors import ConfigError
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store
from pathsegdiff.train_head.fit import TrainConfig, resolve_class_weights
from pathsegdiff.train_head.losses import auto_class_weights, parse_class_weights, segmentation_loss
from pathsegdiff.train_head.splits import read_splits

IGNORE = 255


def test_focal_with_gamma_zero_is_cross_entropy_weighted_or_not():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    targets = torch.randint(0, 3, (2, 8, 8), generator=g)
    targets[0, :2] = IGNORE
    w = torch.tensor([0.5, 2.0, 1.0])
    for weights in (None, w):
        ce = segmentation_loss(logits, targets, IGNORE, weights=weights)
        focal = segmentation_loss(logits, targets, IGNORE, loss="focal", gamma=0.0, weights=weights)
        torch.testing.assert_close(focal, ce)
    torch.testing.assert_close(segmentation_loss(logits, targets, IGNORE),
                               F.cross_entropy(logits, targets, ignore_index=IGNORE))


def test_focal_loss_down_weights_confident_pixels():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])  # a confident and an unsure pixel, both class 0
    targets = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, targets, reduction="none")
    focal = segmentation_loss(logits, targets, IGNORE, loss="focal", gamma=2.0)
    p = logits.softmax(-1)[:, 0]
    torch.testing.assert_close(focal, ((1 - p) ** 2 * ce).mean())


def test_weights_that_zero_every_labelled_pixel_skip_the_step():
    logits, targets = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    assert segmentation_loss(logits, targets, IGNORE, weights=torch.tensor([0.0, 1.0])) is None


def test_parse_class_weights():
    assert parse_class_weights("auto") == "auto" and parse_class_weights(None) is None
    assert parse_class_weights("1,2.5, 0") == (1.0, 2.5, 0.0)
    for bad in ("1,x", "-1,2", "0,0", "nan,1"):
        with pytest.raises(ConfigError):
            parse_class_weights(bad)
    assert TrainConfig(class_weights="1,2").to_dict()["class_weights"] == [1.0, 2.0]


def test_auto_weights_are_inverse_frequencies_averaging_one():
    w = auto_class_weights([600, 300, 100, 0])
    np.testing.assert_allclose(w[:3] / w[0], [1, 2, 6])
    assert w[3] == 0 and w[:3].mean() == pytest.approx(1.0)


def _store(path, labels: np.ndarray, splits: list[str]) -> str:
    n, size = labels.shape[0], labels.shape[1]
    spec = FeatureSpec("synthetic", "0" * 64, (BlockSpec("up1", 2, 2, 2),), (50,), tile_size=size)
    schema = StoreSchema(spec, n_tiles=n, class_names=("a", "b", "c"), store_rgb=False)
    tiles = [TileRecord(f"t{i}", f"S{i}", 0, 0, 0.5, splits[i]) for i in range(n)]
    with create_store(path, schema, tiles) as w:
        w.write(range(n), TileBatch(features={50: {"up1": np.zeros((n, 2, 2, 2), np.float32)}}, labels=labels))
    return str(path)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_auto_class_weights_are_the_inverse_pixel_frequencies_of_the_train_split(tmp_path_factory, data):
    n = data.draw(st.integers(3, 6))
    splits = ["train", "val"] + data.draw(st.lists(st.sampled_from(["train", "val", "test"]), min_size=n - 2,
                                                   max_size=n - 2))
    # class shares of the pixels (a class may be absent), ignore pixels among them
    shares = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=4, max_size=4)), float) + [1e-3, 0, 0, 0]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    labels = rng.choice(np.array([0, 1, 2, IGNORE], np.uint8), size=(n, 8, 8), p=shares / shares.sum())
    train = [i for i, s in enumerate(splits) if s == "train"]
    labels[train[0], 0, 0] = 0  # at least one labelled train pixel
    where = _store(tmp_path_factory.mktemp("w") / "s.zarr", labels, splits)
    from pathsegdiff.store import open_store

    idx = read_splits(open_store(where)).train
    weights = resolve_class_weights(TrainConfig(class_weights="auto"), where, idx, 3, IGNORE)
    pixels = labels[train].ravel()
    freq = np.array([(pixels == k).sum() for k in range(3)]) / (pixels != IGNORE).sum()
    present = freq > 0
    expected = np.zeros(3)
    expected[present] = 1 / freq[present]
    expected[present] /= expected[present].mean()
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
