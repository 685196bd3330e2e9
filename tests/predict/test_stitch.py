"""Overlap-weighted fusion of tile logits."""

from __future__ import annotations

import numpy as np
import pytest

from pathsegdiff.errors import ConfigError
from pathsegdiff.predict.stitch import LogitFuser, StitchConfig, fuse_tiles, tile_grid, tile_origins, window_weights


def pointwise(rgb: np.ndarray) -> np.ndarray:
    """A stand-in model whose logits at a pixel depend only on that pixel: (3, h, w) -> (4, h, w)."""
    x = rgb.astype(np.float32) / 255
    return np.stack([x[0] - x[1], x[1] * x[2], np.sin(3 * x[2]), x.sum(0) / 3 - 0.5])


@pytest.mark.parametrize("window", ["gaussian", "mean", "none"])
@pytest.mark.parametrize("shape, tile, overlap", [((300, 517), 64, 16), ((64, 64), 64, 0), ((130, 70), 32, 31)])
def test_tiled_pointwise_prediction_equals_one_pass(rng, window, shape, tile, overlap):
    image = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    cfg = StitchConfig(tile=tile, overlap=overlap, window=window)
    tiles = ((y, x, pointwise(image[:, y : y + tile, x : x + tile])) for y, x in tile_grid(*shape, cfg))
    fused = fuse_tiles(tiles, *shape, 4, cfg)
    whole = pointwise(image)
    # The class map is identical; the logits differ only by float32 rounding of the weighted sums.
    assert np.array_equal(fused.argmax(0), whole.argmax(0))
    np.testing.assert_allclose(fused, whole, rtol=0, atol=2e-5)


def test_grid_covers_and_ends_at_the_border():
    assert tile_origins(256, 256, 192) == [0]
    assert tile_origins(500, 256, 192) == [0, 192, 244]
    assert tile_origins(100, 256, 192) == [0]
    cover = np.zeros((500, 700), int)
    for y, x in tile_grid(500, 700, StitchConfig(256, 64)):
        cover[y : y + 256, x : x + 256] += 1
    assert cover.min() >= 1


def test_window_is_centre_weighted_and_never_zero():
    w = window_weights(StitchConfig(tile=64, overlap=16, window="gaussian"))
    assert w[32, 32] > 0.99 and w[0, 0] < w[16, 16] < w[24, 24] < w[32, 32]
    assert w.min() > 0


def test_memory_is_bounded_by_a_band_of_rows(rng):
    """Fusing a tall image keeps only rows a later tile can still reach."""
    cfg = StitchConfig(tile=32, overlap=8)
    h, w = 2000, 64
    fuser = LogitFuser(h, w, 2, cfg)
    held, rows = 0, 0
    for y, x in tile_grid(h, w, cfg):
        for y0, strip in fuser.add(y, x, np.ones((2, 32, 32), np.float32)):
            assert y0 == rows
            rows += strip.shape[1]
        held = max(held, fuser.norm.shape[0])
    rows += sum(s.shape[1] for _, s in fuser.finish())
    assert rows == h
    assert held <= 2 * cfg.tile


def test_out_of_order_tiles_are_refused():
    fuser = LogitFuser(100, 100, 1, StitchConfig(tile=32, overlap=0))
    list(fuser.add(32, 0, np.zeros((1, 32, 32), np.float32)))
    with pytest.raises(ConfigError, match="raster order"):
        list(fuser.add(0, 0, np.zeros((1, 32, 32), np.float32)))
