"""Slide annotations as a label-mask image: a PNG, or a (pyramidal) TIFF, at a downsample of the slide.

A mask pixel holds a class id (the line of ``classes.txt``) or 255 for
unannotated.  Its downsample is the slide's level-0 width over the mask's
width; the height must agree within a pixel, else the mask belongs to
another slide and is refused.  A tile's labels sample the mask at the
centre of each tile pixel (nearest neighbour: ids are never blended).  A
TIFF is read window by window through its zarr view, so a large mask is
never decoded whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathsegdiff.errors import InputError
from pathsegdiff.tiles import images as I

IGNORE = 255
CHECK_WHOLE_PX = 1 << 26  # masks up to this size have every value checked up front


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


class MaskLabels:
    """Labels of one slide from its label mask; opened lazily in each process."""

    def __init__(self, path: Path, class_names: tuple[str, ...], slide_size: tuple[int, int],
                 slide_name: str = "the slide"):
        self.path, self.n_classes = Path(path), len(class_names)
        self._data = None
        w, h = self._size()
        w0, h0 = slide_size
        self.downsample = w0 / w
        if abs(h0 / self.downsample - h) > 1 or self.downsample < 1 - 1e-6:
            raise InputError(f"{self.path}: mask is {w}x{h} px, not a downsample of {slide_name} ({w0}x{h0} px): "
                             f"width ratio {w0 / w:.3f}, height ratio {h0 / h:.3f}")
        self.size = (w, h)
        if w * h <= CHECK_WHOLE_PX:
            I.check_labels(np.asarray(self._array()[:, :]), self.n_classes, IGNORE, self.path)

    def _size(self) -> tuple[int, int]:
        if not self.path.is_file():
            raise InputError(f"{self.path}: mask not found")
        if _is_tiff(self.path):
            shape = self._array().shape
            return int(shape[1]), int(shape[0])
        return I.mask_size(self.path)

    def _array(self):
        """The mask as an array-like (H, W): in memory for a PNG, a zarr view of level 0 for a TIFF."""
        if self._data is None:
            if _is_tiff(self.path):
                import tifffile
                import zarr

                try:
                    series = tifffile.TiffFile(self.path).series[0]
                    data = zarr.open_array(series.aszarr(level=0), mode="r")
                except Exception as e:  # tifffile raises many types for a file it cannot parse
                    raise InputError(f"{self.path}: cannot open as a TIFF mask ({type(e).__name__}: {e})") from None
                if data.ndim != 2:
                    raise InputError(f"{self.path}: mask has shape {data.shape}; it must be one channel of class ids")
                self._data = data
            else:
                self._data = I.read_mask(self.path)
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    def _window(self, x0: float, y0: float, w0: float, h0: float, out_w: int, out_h: int) -> np.ndarray:
        d, (w, h) = self.downsample, self.size
        cols = np.clip(np.floor((x0 + (np.arange(out_w) + 0.5) * w0 / out_w) / d).astype(np.int64), 0, w - 1)
        rows = np.clip(np.floor((y0 + (np.arange(out_h) + 0.5) * h0 / out_h) / d).astype(np.int64), 0, h - 1)
        block = np.asarray(self._array()[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        return block[np.ix_(rows - rows[0], cols - cols[0])]

    def labels(self, x0: float, y0: float, w0: float, h0: float, out_w: int, out_h: int) -> np.ndarray:
        """(out_h, out_w) uint8 class ids of the level-0 window (x0, y0, w0, h0); IGNORE where unannotated."""
        return I.check_labels(self._window(x0, y0, w0, h0, out_w, out_h), self.n_classes, IGNORE, self.path)

    def annotated_fraction(self, x0: float, y0: float, size0: float) -> float:
        """Share of the square window's mask pixels that hold a class."""
        n = max(1, round(size0 / self.downsample))
        return float((self._window(x0, y0, size0, size0, n, n) != IGNORE).mean())

    def describe(self) -> dict:
        return {"annotations": str(self.path), "format": "mask", "downsample": self.downsample}


def open_annotations(path: Path, class_map, slide_size: tuple[int, int], slide_name: str,
                     level_sizes: tuple[tuple[int, int], ...] = ()):
    """The labeller for an annotation file: GeoJSON (.geojson, .json) or a label mask (image or TIFF)."""
    from pathsegdiff.tiles.annotations import PolygonLabels

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: annotation file not found")
    if path.suffix.lower() in (".geojson", ".json"):
        return PolygonLabels(path, class_map, slide_size, slide_name, level_sizes)
    if path.suffix.lower() in I.IMAGE_EXTENSIONS:
        return MaskLabels(path, class_map.names, slide_size, slide_name)
    raise InputError(f"{path}: annotations must be QuPath GeoJSON (.geojson, .json) or a label mask "
                     f"({', '.join(I.IMAGE_EXTENSIONS)})")
