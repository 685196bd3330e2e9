"""Whole-slide images through tiffslide: tissue detection and a tile grid at a target mpp.

Tissue is found on a thumbnail (about 16 thumbnail pixels per tile side):
Otsu's threshold on HSV saturation (glass and background are grey or white,
stained tissue is coloured), floored at 20/255 so an empty slide finds no
tissue, then a morphological closing, an opening and hole filling.  A tile is
kept when at least ``min_tissue`` of its footprint is tissue.

Tiles are read from the pyramid level closest below the needed downsample and
resized to the tile size (Lanczos); coordinates are recorded at level 0, with
the level read.  As in image sources, where the last tile of a row or column
would overhang the slide it is shifted back to end at the border (it overlaps
its neighbour), so tissue that reaches the edge is tiled.  ``min_tissue`` 0
keeps every tile that holds any tissue.

With annotations (``tiles/annotations.py``, ``tiles/label_masks.py``) each
tile carries labels at its own resolution, and the fraction of it that is
annotated; a tile with annotated pixels is kept even with little tissue, and
``annotated_only`` keeps only those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pathsegdiff.errors import InputError, MissingDependencyError
from pathsegdiff.tiles.annotations import IGNORE, ClassMap
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
    # Padded with the edge's own values: the closing's erosion would otherwise eat tissue that reaches the border.
    pad = 4
    mask = np.pad(mask, pad, mode="edge")
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3)), iterations=1)
    return ndimage.binary_fill_holes(mask)[pad:-pad, pad:-pad]


def axis_starts(length0: int, footprint: float, step: float) -> list[int]:
    """Level-0 tile starts along one axis; the last is shifted back to end at the border."""
    if length0 < footprint:
        return []
    starts = [round(k * step) for k in range(int((length0 - footprint) // step) + 1)]
    if starts[-1] + footprint < length0 - 0.5:
        starts.append(int(length0 - footprint))
    return starts


class SlideSource(TileSource):
    """Tiles of one slide file at ``target_mpp``: tiles with enough tissue, or annotated ones."""

    kind = "slide"

    def __init__(self, path: Path, tile_size: int = 256, stride: int | None = None, target_mpp: float = 0.5,
                 mpp: float | None = None, min_tissue: float = 0.5, split: str = "", patient: str = "",
                 annotations: Path | None = None, class_map: ClassMap | None = None, annotated_only: bool = False):
        self.path, self.tile_size, self.target_mpp, self.min_tissue = Path(path), tile_size, target_mpp, min_tissue
        self.stride, self.patient, self.annotated_only = stride or tile_size, patient, annotated_only
        self.class_names = class_map.names if class_map else ()
        self._slide = None
        slide = self.open_slide()
        native = mpp or slide.properties.get("tiffslide.mpp-x")
        if not native:
            raise InputError(f"{self.path}: the slide does not record its resolution (mpp); declare it with --source-mpp")
        self.native_mpp = float(native)
        f = resample_factor(self.native_mpp, target_mpp)
        self.tile_mpp = self.native_mpp / f
        self.footprint = self.tile_size / f  # level-0 pixels per tile side
        self.level = int(slide.get_best_level_for_downsample(self.footprint / self.tile_size))
        w0, h0 = slide.dimensions
        self.labeller = None
        if annotations is not None:
            if class_map is None:
                raise InputError(f"{annotations}: annotations need class names: add a classes.txt or pass --classes")
            from pathsegdiff.tiles.label_masks import open_annotations

            self.labeller = open_annotations(Path(annotations), class_map, (w0, h0), self.path.name,
                                             tuple(tuple(map(int, d)) for d in slide.level_dimensions))
        self.notes: list[str] = list(getattr(self.labeller, "notes", []))  # said at the start of a run
        xs = axis_starts(w0, self.footprint, self.stride / f)
        ys = axis_starts(h0, self.footprint, self.stride / f)
        if not xs or not ys:
            raise InputError(f"{self.path}: {w0}x{h0} px is smaller than one tile at {target_mpp} um/px")
        _, tissue = self.thumbnail()
        sy, sx = tissue.shape[0] / h0, tissue.shape[1] / w0
        self.records, self.tissue_fraction = [], float(tissue.mean())
        for y in ys:
            for x in xs:
                win = tissue[int(y * sy) : max(int(y * sy) + 1, int((y + self.footprint) * sy)),
                             int(x * sx) : max(int(x * sx) + 1, int((x + self.footprint) * sx))]
                annotated = self.labeller.annotated_fraction(x, y, self.footprint) if self.labeller else float("nan")
                enough = bool(win.size and win.any() and win.mean() >= min_tissue)
                if (annotated > 0) if annotated_only else (enough or annotated > 0):
                    self.records.append(TileRecord(f"{self.path.stem}_{x}_{y}", self.path.stem, x, y,
                                                   self.tile_mpp, split, patient, self.level, annotated))
        if not self.records:
            if annotated_only:
                raise InputError(f"{self.path}: no tile holds annotated pixels (--annotated-only)")
            raise InputError(f"{self.path}: no tile has {min_tissue:.0%} tissue (tissue covers "
                             f"{self.tissue_fraction:.1%} of the slide); lower --min-tissue")
        self._slide = None  # workers reopen the file themselves

    def thumbnail(self) -> tuple[np.ndarray, np.ndarray]:
        """The thumbnail tissue is found on (about 16 px per tile side) and its tissue mask."""
        w0, h0 = self.open_slide().dimensions
        d = max(1.0, self.footprint / THUMB_PX_PER_TILE, max(w0, h0) / MAX_THUMB_SIDE)
        size = (max(1, round(w0 / d)), max(1, round(h0 / d)))
        thumb = np.asarray(self.open_slide().get_thumbnail(size).convert("RGB"))
        return thumb, tissue_mask(thumb)

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
        level = self.level
        ds = slide.level_downsamples[level]
        size = max(1, round(self.footprint / ds))
        try:
            region = slide.read_region((r.x, r.y), level, (size, size)).convert("RGB")
        except Exception as e:
            raise InputError(f"{self.path}: cannot read tile at ({r.x}, {r.y}): {e}") from None
        if region.size != (self.tile_size, self.tile_size):
            region = region.resize((self.tile_size, self.tile_size), Image.Resampling.LANCZOS)
        sample = TileSample(np.ascontiguousarray(np.asarray(region, dtype=np.uint8).transpose(2, 0, 1)))
        s, fp = self.tile_size, self.footprint
        if self.labeller is not None:
            sample.labels = self.labeller.labels(r.x, r.y, fp, fp, s, s)
        elif self.class_names:  # a slide without annotations in a labelled cohort
            sample.labels = np.full((s, s), IGNORE, np.uint8)
        return sample

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "native_mpp": self.native_mpp,
                "tile_mpp": self.tile_mpp, "stride": self.stride, "level": self.level, "min_tissue": self.min_tissue,
                "tissue_fraction": self.tissue_fraction, "patient": self.patient,
                "annotated_tiles": sum(r.annotated > 0 for r in self.records),
                **(self.labeller.describe() if self.labeller else {})}
