"""Whole-slide images through tiffslide: tissue detection and a tile grid at a target mpp.

Tissue is found on a thumbnail (about 16 thumbnail pixels per tile side):
Otsu's threshold on HSV saturation (glass and background are grey or white,
stained tissue is coloured), floored at 20/255 so an empty slide finds no
tissue, then a morphological closing, an opening and hole filling.  A tile is
kept when at least ``min_tissue`` of its footprint is tissue.

Tiles are read from the pyramid level closest below the needed downsample and
resized to the tile size (Lanczos); coordinates are recorded at level 0.
Unlike image sources, the grid does not shift a last tile back to the slide's
border: a partial tile at a slide edge is background, and is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pathsegdiff.errors import InputError, MissingDependencyError
from pathsegdiff.tiles.sources import TileSample, TileSource, resample_factor
from pathsegdiff.store import TileRecord

THUMB_PX_PER_TILE = 16
MAX_THUMB_SIDE = 4096
MIN_SATURATION = 20


def _tiffslide():
    try:
        import tiffslide
    except ImportError:
        raise MissingDependencyError("tiffslide", "wsi", "reading whole-slide images") from None
    return tiffslide


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values (the level maximising between-class variance)."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    between[~np.isfinite(between)] = 0.0
    return int(np.argmax(between))


def tissue_mask(thumb_rgb: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an (H, W, 3) uint8 thumbnail."""
    sat = np.asarray(Image.fromarray(thumb_rgb).convert("HSV"))[..., 1]
    mask = sat > max(otsu_threshold(sat), MIN_SATURATION)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3)), iterations=1)
    return ndimage.binary_fill_holes(mask)


class SlideSource(TileSource):
    """Tiles of one slide file at ``target_mpp``; only tiles with enough tissue."""

    kind = "slide"

    def __init__(self, path: Path, tile_size: int = 256, stride: int | None = None, target_mpp: float = 0.5,
                 mpp: float | None = None, min_tissue: float = 0.5, split: str = ""):
        self.path, self.tile_size, self.target_mpp, self.min_tissue = Path(path), tile_size, target_mpp, min_tissue
        self._slide = None
        slide = self.open_slide()
        native = mpp or slide.properties.get("tiffslide.mpp-x")
        if not native:
            raise InputError(f"{self.path}: the slide does not record its resolution (mpp); declare it with --source-mpp")
        self.native_mpp = float(native)
        f = resample_factor(self.native_mpp, target_mpp)
        self.tile_mpp = self.native_mpp / f
        self.footprint = self.tile_size / f  # level-0 pixels per tile side
        step = (stride or tile_size) / f
        w0, h0 = slide.dimensions
        xs = [round(k * step) for k in range(int((w0 - self.footprint) // step) + 1)] if w0 >= self.footprint else []
        ys = [round(k * step) for k in range(int((h0 - self.footprint) // step) + 1)] if h0 >= self.footprint else []
        if not xs or not ys:
            raise InputError(f"{self.path}: {w0}x{h0} px is smaller than one tile at {target_mpp} um/px")
        d = max(1.0, self.footprint / THUMB_PX_PER_TILE, max(w0, h0) / MAX_THUMB_SIDE)
        thumb = np.asarray(slide.get_thumbnail((max(1, round(w0 / d)), max(1, round(h0 / d)))).convert("RGB"))
        tissue = tissue_mask(thumb)
        sy, sx = tissue.shape[0] / h0, tissue.shape[1] / w0
        self.records, self.tissue_fraction = [], float(tissue.mean())
        for y in ys:
            for x in xs:
                win = tissue[int(y * sy) : max(int(y * sy) + 1, int((y + self.footprint) * sy)),
                             int(x * sx) : max(int(x * sx) + 1, int((x + self.footprint) * sx))]
                if win.size and win.mean() >= min_tissue:
                    self.records.append(TileRecord(f"{self.path.stem}_{x}_{y}", self.path.stem, x, y,
                                                   self.tile_mpp, split))
        if not self.records:
            raise InputError(f"{self.path}: no tile has {min_tissue:.0%} tissue (tissue covers "
                             f"{self.tissue_fraction:.1%} of the slide); lower --min-tissue")
        self._slide = None  # workers reopen the file themselves

    def open_slide(self):
        """The tiffslide handle, opened once per process (workers reopen it after unpickling)."""
        if self._slide is None:
            try:
                slide = _tiffslide().TiffSlide(self.path)
                _ = slide.properties, slide.dimensions  # parsed lazily: a damaged file fails here, not later
                self._slide = slide
            except MissingDependencyError:
                raise
            except Exception as e:  # tifffile raises many types for a file it cannot parse
                raise InputError(f"{self.path}: cannot open as a slide ({type(e).__name__}: {e})") from None
        return self._slide

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_slide": None}

    def load(self, i: int) -> TileSample:
        r, slide = self.records[i], self.open_slide()
        level = slide.get_best_level_for_downsample(self.footprint / self.tile_size)
        ds = slide.level_downsamples[level]
        size = max(1, round(self.footprint / ds))
        try:
            region = slide.read_region((r.x, r.y), level, (size, size)).convert("RGB")
        except Exception as e:
            raise InputError(f"{self.path}: cannot read tile at ({r.x}, {r.y}): {e}") from None
        if region.size != (self.tile_size, self.tile_size):
            region = region.resize((self.tile_size, self.tile_size), Image.Resampling.LANCZOS)
        return TileSample(np.ascontiguousarray(np.asarray(region, dtype=np.uint8).transpose(2, 0, 1)))

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "native_mpp": self.native_mpp,
                "tile_mpp": self.tile_mpp, "min_tissue": self.min_tissue, "tissue_fraction": self.tissue_fraction}
