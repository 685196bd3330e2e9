"""Tile sources: where the tiles of an extraction come from.

A source lists its tiles up front (``records``: the store's tile table) and
decodes one on demand (``load(i)``), so the job can create the store, skip
tiles already written, and decode in DataLoader workers.  Sources pickle
without open file handles, so workers under fork or spawn work alike.

Conventions shared by every source:

- ``rgb`` is channels-first ``(3, S, S)`` uint8, the store's and the model's
  layout; ``labels`` ``(S, S)`` uint8 with 255 = ignore; ``instances``
  ``(S, S)`` int32 (0 = background) where the dataset has object ids.
- ``x, y`` in the tile table are the tile's top-left corner in the source's
  native pixel frame (level 0 of a slide; the original image before any
  resampling, plus the ROI offset for BCSS).  ``mpp`` is the tile's own
  resolution, so one tile spans ``S * mpp / native_mpp`` native pixels.
- Grid: tiles of ``S`` pixels every ``stride`` pixels (default ``S``) at the
  target resolution.  Where the last tile would overhang the image it is
  shifted back to end at the border (it overlaps its neighbour; nothing is
  padded and nothing is dropped).  An image smaller than one tile is refused.
- ``tile_id`` is ``<image stem>_<x>_<y>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pathsegdiff.errors import InputError
from pathsegdiff.tiles import images as I
from pathsegdiff.store import TileRecord

IGNORE = 255
# Resolutions within 2 % of the target are used as they are: resampling by
# 0.499 -> 0.5 um/px would only blur.
MPP_TOLERANCE = 0.02


@dataclass
class TileSample:
    """One decoded tile (see the module docstring for layouts)."""

    rgb: np.ndarray
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None


class TileSource:
    """Base class: ``records`` lists the tiles, ``load(i)`` decodes tile ``i``."""

    kind = "tiles"
    tile_size: int
    class_names: tuple[str, ...] = ()
    has_instances: bool = False
    records: list[TileRecord]

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> TileSample:
        raise NotImplementedError

    def describe(self) -> dict:
        """What goes into the store's provenance."""
        return {"kind": self.kind, "n_tiles": len(self.records), "tile_size": self.tile_size}


def grid_positions(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis; the last tile is shifted back to end at the border."""
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def resample_factor(native_mpp: float | None, target_mpp: float | None) -> float:
    """Output pixels per native pixel; 1.0 when either resolution is unknown or they are close."""
    if not native_mpp or not target_mpp or math.isnan(native_mpp) or math.isnan(target_mpp):
        return 1.0
    f = native_mpp / target_mpp
    return 1.0 if abs(f - 1.0) <= MPP_TOLERANCE else f


@dataclass(frozen=True)
class ImageEntry:
    """One image (and its mask) of an image-list source."""

    image: Path
    mask: Path | None = None
    slide_id: str = ""
    split: str = ""
    native_mpp: float = float("nan")
    offset: tuple[int, int] = (0, 0)  # where the image sits in its slide's native frame


@dataclass(frozen=True)
class _Tile:
    entry: int
    x: int  # in the resampled image
    y: int


@lru_cache(maxsize=2)  # per process: a worker decodes each image once for its tiles
def _decoded(path: Path, mtime: float, size: tuple[int, int], is_mask: bool) -> np.ndarray:
    if is_mask:
        a = I.read_mask(path)
        if a.shape[::-1] != size:
            a = np.asarray(Image.fromarray(a.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
        return a
    a = I.read_rgb(path)
    if a.shape[1::-1] != size:
        a = np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS))
    return a


@dataclass
class ImageListSource(TileSource):
    """Tiles cut from whole images on a grid, optionally resampled to ``target_mpp``.

    ``labels`` come from masks of class ids (``class_names`` declared), or of
    dataset codes mapped through ``code_map``;
    with ``instance_masks`` the mask holds object ids instead, labels are
    ``id > 0`` and the ids are kept as instances (GlaS).
    """

    entries: list[ImageEntry]
    tile_size: int = 256
    stride: int | None = None
    target_mpp: float | None = None
    class_names: tuple[str, ...] = ()
    instance_masks: bool = False
    code_map: tuple[int, ...] | None = None  # mask code -> class id (255 = ignore), e.g. BCSS's 22 codes
    origin: str = "real"  # or synthetic: generated tiles with known masks (store/records.py)
    kind: str = "images"
    root: str = ""
    records: list[TileRecord] = field(init=False)
    _tiles: list[_Tile] = field(init=False, repr=False)
    _sizes: list[tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise InputError(f"tile size must be >= 8 px, got {self.tile_size}")
        stride = self.stride or self.tile_size
        if stride < 1:
            raise InputError(f"stride must be >= 1 px, got {stride}")
        if any(e.mask for e in self.entries) and not self.class_names:
            raise InputError(f"{self.root}: masks found but no class names: add a classes.txt or pass --classes")
        self.has_instances = self.instance_masks
        self.records, self._tiles, self._sizes = [], [], []
        for k, e in enumerate(self.entries):
            w, h = I.image_size(e.image)
            if e.mask is not None and I.mask_size(e.mask) != (w, h):
                raise InputError(f"{e.mask}: mask is {I.mask_size(e.mask)} px, its image {e.image.name} is {(w, h)}")
            if self.target_mpp and math.isnan(e.native_mpp):  # resample_factor would silently give 1.0
                raise InputError(f"{e.image}: its resolution is unknown, so it cannot be resampled to "
                                 f"{self.target_mpp} um/px; drop --mpp to tile it at its own resolution, or declare "
                                 "its um/px with --source-mpp")
            f = resample_factor(e.native_mpp, self.target_mpp)
            size = (round(w * f), round(h * f))
            self._sizes.append(size)
            xs = grid_positions(size[0], self.tile_size, stride)
            ys = grid_positions(size[1], self.tile_size, stride)
            if not xs or not ys:
                raise InputError(
                    f"{e.image}: {size[0]}x{size[1]} px (after resampling) is smaller than one "
                    f"{self.tile_size}-px tile; use a smaller --tile-size or drop the image"
                )
            mpp = e.native_mpp / f
            for y in ys:
                for x in xs:
                    nx, ny = e.offset[0] + round(x / f), e.offset[1] + round(y / f)
                    self.records.append(TileRecord(f"{e.image.stem}_{nx}_{ny}", e.slide_id or e.image.stem,
                                                   nx, ny, float(mpp), e.split, origin=self.origin))
                    self._tiles.append(_Tile(k, x, y))

    def load(self, i: int) -> TileSample:
        t = self._tiles[i]
        e, size, s = self.entries[t.entry], self._sizes[t.entry], self.tile_size
        rgb = _decoded(e.image, e.image.stat().st_mtime, size, False)[t.y : t.y + s, t.x : t.x + s]
        sample = TileSample(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        if e.mask is not None:
            m = _decoded(e.mask, e.mask.stat().st_mtime, size, True)[t.y : t.y + s, t.x : t.x + s]
            if self.instance_masks:
                sample.labels = (m > 0).astype(np.uint8)
                sample.instances = m.astype(np.int32)
            elif self.code_map is not None:
                codes = I.check_labels(m, len(self.code_map), IGNORE, e.mask)
                lut = np.full(256, IGNORE, np.uint8)
                lut[: len(self.code_map)] = self.code_map
                sample.labels = lut[codes]
            else:
                sample.labels = I.check_labels(m, len(self.class_names), IGNORE, e.mask)
        elif self.class_names:
            sample.labels = np.full((s, s), IGNORE, np.uint8)  # unlabelled image in a labelled set
            if self.instance_masks:
                sample.instances = np.zeros((s, s), np.int32)
        return sample

    def describe(self) -> dict:
        return {**super().describe(), "root": self.root, "images": len(self.entries),
                "stride": self.stride or self.tile_size, "target_mpp": self.target_mpp,
                "class_names": list(self.class_names), **({"origin": self.origin} if self.origin != "real" else {})}


class ReorderedSource(TileSource):
    """Another source's tiles in another order: tile ``i`` here is tile ``order[i]`` there.

    A store grows only at its end, so a source whose new slides come before the
    store's is listed in the store's order first (``plan.align_to_store``).  An
    entry of ``order`` may also be a store's own record of a tile of another
    origin (the real tiles of a store synthetic ones are added to): listed in
    its place, already written, never loaded.
    """

    def __init__(self, source: TileSource, order: list[int | TileRecord]):
        self.source = source
        self.order = [o if isinstance(o, TileRecord) else int(o) for o in order]
        self.kind, self.tile_size, self.class_names = source.kind, source.tile_size, source.class_names
        self.has_instances = source.has_instances
        self.records = [o if isinstance(o, TileRecord) else source.records[o] for o in self.order]

    def load(self, i: int) -> TileSample:
        entry = self.order[i]
        if isinstance(entry, TileRecord):  # align_to_store refuses a store whose other tiles are not all written
            raise InputError(f"tile {entry.tile_id} is a {entry.origin} tile of the store from another source; "
                             "this source cannot compute it")
        return self.source.load(entry)

    def describe(self) -> dict:
        return self.source.describe()
