"""What ``predict`` reads: an ordinary image, or a whole slide at an analysis resolution.

Both plan their tiles in raster order as :class:`PlannedTile` ``(y, x,
tile_id, key)`` in the analysis frame (the image's own pixels; for a slide,
pixels at ``target_mpp``), decode one with ``tile_rgb(key)`` (3, S, S) uint8, and
give a small RGB thumbnail for the overlay.  Tile ids are the extraction
sources' (``<stem>_<x>_<y>``, level-0 or native pixels), so a store's tiles are
found by id and computed ones get the same noise.  A slide's plan covers every
tile that holds tissue, edge tiles included (``tiles/wsi.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from pathsegdiff.errors import InputError
from pathsegdiff.tiles.cohort import is_slide_file as is_slide
from pathsegdiff.tiles.images import read_rgb
from pathsegdiff.predict.stitch import StitchConfig, tile_grid

THUMB_MAX_SIDE = 2048


class PlannedTile(NamedTuple):
    y: int
    x: int
    tile_id: str
    key: Any  # what ``rgb`` needs to decode it


@dataclass
class ImageInput:
    """A whole RGB image held in memory (Pillow's size guard bounds it)."""

    path: Path
    tile: int
    target_mpp: float = 0.5
    source_mpp: float | None = None  # None: assumed to be at target_mpp already (a plain image records none)

    def __post_init__(self) -> None:
        rgb = read_rgb(self.path)  # (H, W, 3); raises InputError naming the file
        if self.source_mpp is not None and self.source_mpp != self.target_mpp:
            scale = self.source_mpp / self.target_mpp
            h, w = rgb.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        self.rgb = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        _, self.height, self.width = self.rgb.shape
        self.mpp = self.target_mpp if self.source_mpp is not None else float("nan")
        self.native_per_analysis = 1.0

    def preflight(self, cfg: StitchConfig) -> str:
        if self.source_mpp is None:
            where = (f"assumed to be at the head's resolution, {self.target_mpp:g} um/px: pass --source-mpp "
                     "if it is not")
        else:
            where = f"resampled from {self.source_mpp:g} to {self.target_mpp:g} um/px"
        return f"{self.path.name}: a plain image, {where}; {self.n_tiles(cfg)} tiles of {self.tile} px"

    def plan(self, cfg: StitchConfig) -> list[PlannedTile]:
        # the image source's tile ids: same noise
        return [PlannedTile(y, x, f"{self.path.stem}_{x}_{y}", (y, x)) for y, x in tile_grid(self.height, self.width, cfg)]

    def tile_rgb(self, key) -> np.ndarray:
        y, x = key
        t = self.rgb[:, y : y + self.tile, x : x + self.tile]
        if t.shape[1:] != (self.tile, self.tile):  # image smaller than one tile: pad with glass
            pad = np.full((3, self.tile, self.tile), 240, np.uint8)
            pad[:, : t.shape[1], : t.shape[2]] = t
            t = pad
        return t

    def tiles(self, cfg: StitchConfig) -> Iterator[tuple[int, int, np.ndarray, str]]:
        for t in self.plan(cfg):
            yield t.y, t.x, self.tile_rgb(t.key), t.tile_id

    def n_tiles(self, cfg: StitchConfig) -> int:
        return len(tile_grid(self.height, self.width, cfg))

    def thumbnail(self, max_side: int = THUMB_MAX_SIDE) -> np.ndarray:
        im = Image.fromarray(self.rgb.transpose(1, 2, 0))
        im.thumbnail((max_side, max_side))
        return np.asarray(im)


class SlideInput:
    """A whole slide through the WSI source: tissue tiles only, at ``target_mpp``."""

    def __init__(self, path: Path, tile: int, cfg: StitchConfig, target_mpp: float, min_tissue: float):
        from pathsegdiff.tiles.wsi import SlideSource

        self.path, self.tile = path, tile
        self.source = SlideSource(path, tile_size=tile, stride=cfg.stride, target_mpp=target_mpp,
                                  min_tissue=min_tissue)
        self.mpp = self.source.tile_mpp
        self.native_per_analysis = self.source.tile_mpp / self.source.native_mpp
        w0, h0 = self.source.open_slide().dimensions
        self.height, self.width = int(h0 / self.native_per_analysis), int(w0 / self.native_per_analysis)

    def analysis_xy(self, x0: int, y0: int) -> tuple[int, int]:
        return (min(round(y0 / self.native_per_analysis), self.height - self.tile),
                min(round(x0 / self.native_per_analysis), self.width - self.tile))

    def plan(self, cfg: StitchConfig) -> list[PlannedTile]:
        tiles = [PlannedTile(*self.analysis_xy(r.x, r.y), r.tile_id, i) for i, r in enumerate(self.source.records)]
        return sorted(tiles, key=lambda t: (t.y, t.x))

    def tile_rgb(self, key) -> np.ndarray:
        return self.source.load(key).rgb

    def tiles(self, cfg: StitchConfig) -> Iterator[tuple[int, int, np.ndarray, str]]:
        for t in self.plan(cfg):
            yield t.y, t.x, self.tile_rgb(t.key), t.tile_id

    def preflight(self, cfg: StitchConfig) -> str:
        return (f"{self.path.name}: a slide, {self.width}x{self.height} px at {self.mpp:g} um/px, "
                f"{self.n_tiles(cfg)} tissue tiles of {self.tile} px")

    def n_tiles(self, cfg: StitchConfig) -> int:
        return len(self.source.records)

    def thumbnail(self, max_side: int = THUMB_MAX_SIDE) -> np.ndarray:
        slide = self.source.open_slide()
        scale = min(1.0, max_side / max(self.width, self.height))
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        return np.asarray(slide.get_thumbnail(size).convert("RGB").resize(size))


def open_input(path: str | Path, tile: int, cfg: StitchConfig, target_mpp: float, min_tissue: float,
               source_mpp: float | None = None):
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory; predict takes one image or one slide file")
    if is_slide(p):
        return SlideInput(p, tile, cfg, target_mpp, min_tissue)
    return ImageInput(p, tile, target_mpp, source_mpp)
