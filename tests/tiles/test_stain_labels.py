"""The demo's stain-derived labels on known colours and on the real slide."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pathsegdiff.tiles.stain_labels import STAIN_CLASSES, StainLabelledSource, block_splits, stain_classes

SLIDE = Path(__file__).parents[1] / "data" / "cmu_small_region.svs"


def patch(rgb, size=96):
    return np.broadcast_to(np.array(rgb, np.uint8)[:, None, None], (3, size, size)).copy()


def test_known_colours():
    glass, haematoxylin, eosin = patch((245, 245, 248)), patch((80, 50, 140)), patch((235, 130, 175))
    assert (stain_classes(glass) == 0).all()
    assert (stain_classes(haematoxylin) == 1).all()
    assert (stain_classes(eosin) == 2).all()


def test_specks_are_cleaned_up():
    img = patch((245, 245, 248))
    img[:, 40:43, 40:43] = np.array((80, 50, 140), np.uint8)[:, None, None]  # a 3x3 px speck
    assert (stain_classes(img) == 0).all()


def test_block_splits_are_stable_and_nonempty():
    xy = [(x, y) for x in range(0, 2048, 256) for y in range(0, 2048, 256)]
    a = block_splits(xy, 512)
    assert a == block_splits(list(xy), 512)
    assert set(a) == {"train", "val", "test"}
    same_block = [s for (x, y), s in zip(xy, a) if x // 512 == 0 and y // 512 == 0]
    assert len(set(same_block)) == 1


def test_real_slide_gets_all_three_classes_and_splits():
    pytest.importorskip("tiffslide")
    from pathsegdiff.tiles.wsi import SlideSource

    src = StainLabelledSource(SlideSource(SLIDE, min_tissue=0.25, stride=128))
    assert src.class_names == STAIN_CLASSES
    assert set(Counter(r.split for r in src.records)) == {"train", "val", "test"}
    counts = np.zeros(3, int)
    for i in range(0, len(src), max(1, len(src) // 12)):
        counts += np.bincount(src.load(i).labels.ravel(), minlength=3)
    assert (counts / counts.sum() > 0.05).all(), counts
