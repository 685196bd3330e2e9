"""What ``predict`` writes: the class mask, a colour overlay, and GeoJSON polygons for QuPath.

The mask is filled strip by strip into a disk-backed array (``np.memmap``), so
a slide whose mask would not fit in memory is written in bounded memory; the
pyramidal TIFF is then written tile by tile from it.  Pixels no tile covered
(slide background without tissue) hold ``UNANALYSED``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pathsegdiff.colours import class_colour, paint

UNANALYSED = 255
TIFF_TILE = 256


class MaskCanvas:
    """(H, W) uint8 class ids, disk-backed under ``workdir``."""

    def __init__(self, height: int, width: int, workdir: Path):
        self.path = workdir / "mask.u8"
        # Reserve the file's blocks before mapping it: a mapped page that the disk cannot back is SIGBUS on
        # write (a full tmpfs), where a refused reservation is an ordinary OSError (ENOSPC).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, max(1, height * width))
        except OSError:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self.mask = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=(height, width))
        self.mask[:] = UNANALYSED

    def put_strip(self, y0: int, logits: np.ndarray) -> None:
        """Fused logits (K, rows, W) -> class ids; NaN (no tile covered it) -> UNANALYSED."""
        ids = np.nan_to_num(logits, nan=-np.inf).argmax(0).astype(np.uint8)
        ids[np.isnan(logits[0])] = UNANALYSED
        self.mask[y0 : y0 + ids.shape[0]] = ids

    def downsampled(self, max_side: int) -> tuple[np.ndarray, int]:
        """Nearest-neighbour view no larger than ``max_side`` (copied), and its step."""
        step = max(1, -(-max(self.mask.shape) // max_side))
        return np.ascontiguousarray(self.mask[::step, ::step]), step

    def close(self) -> None:
        self.mask.flush()
        del self.mask
        self.path.unlink(missing_ok=True)


def write_png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.asarray(mask)).save(path)


def write_pyramid_tiff(mask: np.memmap, path: Path, mpp: float, levels: int | None = None) -> None:
    """Tiled, pyramidal (SubIFD) TIFF of class ids, written tile by tile from the memmap."""
    import tifffile

    h, w = mask.shape
    if levels is None:
        levels = max(1, int(np.log2(max(h, w) / 1024)) + 1)

    def tiles(step: int):
        sub = mask[::step, ::step]
        for y in range(0, sub.shape[0], TIFF_TILE):
            for x in range(0, sub.shape[1], TIFF_TILE):
                t = np.full((TIFF_TILE, TIFF_TILE), UNANALYSED, np.uint8)
                block = sub[y : y + TIFF_TILE, x : x + TIFF_TILE]
                t[: block.shape[0], : block.shape[1]] = block
                yield t

    res = (1e4 / mpp, 1e4 / mpp) if mpp == mpp else None  # pixels per cm
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k in range(levels):
            step = 2**k
            shape = (-(-h // step), -(-w // step))
            kw = {"subifds": levels - 1} if k == 0 else {"subfiletype": 1}
            tif.write(tiles(step), shape=shape, dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE),
                      compression="zlib", resolution=res and (res[0] / step, res[1] / step),
                      resolutionunit="CENTIMETER" if res else None, **kw)


def overlay(thumb: np.ndarray, mask_small: np.ndarray, alpha: float = 0.45,
            class_names: Sequence[str] | None = None) -> np.ndarray:
    """Blend class colours over the RGB thumbnail; unanalysed pixels stay as they are.

    With ``class_names`` a legend (each class's colour and name) is added
    underneath, so the picture is taller than the thumbnail.
    """
    m = np.asarray(Image.fromarray(mask_small).resize((thumb.shape[1], thumb.shape[0]), Image.Resampling.NEAREST))
    out = paint(thumb, m, UNANALYSED, alpha)
    return out if class_names is None else with_legend(out, class_names)


def with_legend(image: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """``image`` with a white strip underneath: one line per class, its colour swatch and its name.

    The text scales with the picture (a slide overlay is a few thousand pixels
    high; a 10 px legend under it would be unreadable once scaled to a screen).
    """
    h, w = image.shape[:2]
    size = max(12, min(h, w) // 50)
    font = _font(size)
    row = int(size * 1.4)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(measure.textlength(n, font=font) for n in class_names)
    pic = Image.new("RGB", (max(w, 2 * row + int(text_w)), h + len(class_names) * row + row // 2), (255, 255, 255))
    pic.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(pic)
    for k, name in enumerate(class_names):
        y = h + row // 4 + k * row
        draw.rectangle((row // 4, y + row // 8, row, y + row - row // 8), fill=class_colour(k), outline=(0, 0, 0))
        draw.text((row + row // 3, y + (row - size) // 2), name, fill=(0, 0, 0), font=font)
    return np.asarray(pic)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def write_geojson(mask_small: np.ndarray, step: float, class_names: tuple[str, ...], path: Path,
                  min_area_px: int = 16) -> int:
    """One GeoJSON Feature per connected region of each class, in full-resolution pixel coordinates.

    QuPath imports it (File > Import objects) as annotations classified by
    ``classification.name``.  Returns the number of features.
    """
    from rasterio import features as rf
    from rasterio.transform import Affine

    transform = Affine.scale(step, step)
    out = []
    valid = mask_small != UNANALYSED
    for geom, value in rf.shapes(mask_small, mask=valid, connectivity=8, transform=transform):
        k = int(value)
        ring = np.asarray(geom["coordinates"][0])
        area = 0.5 * abs(np.dot(ring[:-1, 0], ring[1:, 1]) - np.dot(ring[1:, 0], ring[:-1, 1]))
        if area < min_area_px * step * step:
            continue
        name = class_names[k] if k < len(class_names) else f"class{k}"
        out.append({
            "type": "Feature",
            "geometry": geom,
            "properties": {"objectType": "annotation", "class_id": k, "class_name": name,
                           "classification": {"name": name, "color": list(class_colour(k))}},
        })
    path.write_text(json.dumps({"type": "FeatureCollection", "features": out}))
    return len(out)
