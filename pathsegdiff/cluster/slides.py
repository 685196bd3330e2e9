"""Per-tile maps put back where their tiles lie on the slide: an overlay PNG and QuPath GeoJSON per slide.

A tile's position is the tile table's ``x, y``: level-0 pixels of a slide,
pixels of the image (at the analysis resolution) for an image folder.  Its
side in those units (the footprint) is ``tile_size * tile_mpp / native_mpp``
when the store's provenance names the slide's native resolution, else the
grid's most common step divided by the recorded stride (in tile pixels),
times the tile size, else the tile size.  Where tiles overlap, a pixel
takes the value of the tile whose centre is nearest (no tile's border
wins), in the map and in the RGB picture alike.

GeoJSON polygons are in the same units as ``x, y``, so QuPath (File >
Import objects) lays them on the slide; they are written by ``predict``'s
writer, classified ``cluster 0`` ... ``cluster k-1``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pathsegdiff.predict.outputs import UNANALYSED, overlay, write_geojson

OVERLAY_SIDE = 2048  # the PNG's longer side at most (before the legend)
MASK_SIDE = 8192  # the GeoJSON's raster at most


def footprint(provenance: dict, tile_size: int, xs: np.ndarray, ys: np.ndarray) -> float:
    """A tile's side in the units of the tile table's x, y (see the module docstring)."""
    src = provenance.get("source", {}) if isinstance(provenance, dict) else {}
    native, tile_mpp = src.get("native_mpp"), src.get("tile_mpp")
    if native and tile_mpp and np.isfinite(native) and np.isfinite(tile_mpp):
        return float(tile_size * tile_mpp / native)
    stride = src.get("stride")
    steps = np.concatenate([np.diff(np.unique(xs)), np.diff(np.unique(ys))])
    if stride and len(steps):
        values, counts = np.unique(steps, return_counts=True)
        return float(values[counts.argmax()] * tile_size / stride)
    return float(tile_size)


class NearestCentreCanvas:
    """(H, W[, 3]) picture filled tile by tile; an overlapped pixel keeps the tile whose centre is nearest."""

    def __init__(self, height: int, width: int, fill: int, channels: int = 0):
        shape = (height, width, channels) if channels else (height, width)
        self.image = np.full(shape, fill, np.uint8)
        self.dist = np.full((height, width), np.inf, np.float32)

    def put(self, y0: int, x0: int, patch: np.ndarray) -> None:
        n = patch.shape[0]
        r = np.arange(n, dtype=np.float32) - (n - 1) / 2
        d = r[:, None] ** 2 + r[None, :] ** 2
        h, w = self.dist.shape
        ys, xs = slice(max(y0, 0), min(y0 + n, h)), slice(max(x0, 0), min(x0 + n, w))
        py, px = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        win = d[py, px] < self.dist[ys, xs]
        self.dist[ys, xs][win] = d[py, px][win]
        self.image[ys, xs][win] = patch[py, px][win]


def _stitch(xs, ys, fp: float, step: float, patches: Callable[[int], np.ndarray], channels: int, fill: int):
    height = int(np.ceil((ys.max() + fp) / step))
    width = int(np.ceil((xs.max() + fp) / step))
    canvas = NearestCentreCanvas(height, width, fill, channels)
    n = max(1, int(round(fp / step)))
    for j in range(len(xs)):
        img = Image.fromarray(patches(j))
        resample = Image.Resampling.NEAREST if channels == 0 else Image.Resampling.BILINEAR
        canvas.put(int(round(ys[j] / step)), int(round(xs[j] / step)), np.asarray(img.resize((n, n), resample)))
    return canvas.image


def safe_name(slide_id: str) -> str:
    """A slide id as a folder name (path separators and odd characters become '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slide_id).strip(".") or "slide"


def write_slide(folder: Path, xs: np.ndarray, ys: np.ndarray, fp: float, maps: np.ndarray, k: int,
                rgb: Callable[[int], np.ndarray] | None, tile_size: int) -> dict:
    """``overlay.png`` and ``regions.geojson`` of one slide's tiles (maps (n, h, w) uint8, in the order of xs)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = tuple(f"cluster {i}" for i in range(k))
    extent = max(xs.max(), ys.max()) + fp
    mask_step = max(fp / maps.shape[1], extent / MASK_SIDE)
    mask = _stitch(xs, ys, fp, mask_step, lambda j: maps[j], 0, UNANALYSED)
    n_regions = write_geojson(mask, mask_step, names, folder / "regions.geojson")
    pic_step = max(fp / tile_size, extent / OVERLAY_SIDE)
    if rgb is not None:
        thumb = _stitch(xs, ys, fp, pic_step, rgb, 3, 255)
        alpha = 0.45
    else:  # no stored RGB: the colours alone on white
        shape = (int(np.ceil(mask.shape[0] * mask_step / pic_step)), int(np.ceil(mask.shape[1] * mask_step / pic_step)))
        thumb, alpha = np.full((*shape, 3), 255, np.uint8), 1.0
    Image.fromarray(overlay(thumb, mask, alpha=alpha, class_names=names)).save(folder / "overlay.png")
    return {"tiles": len(xs), "footprint": round(fp, 3), "regions": n_regions}
