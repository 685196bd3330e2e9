"""Open images and masks with Pillow, refusing what the model cannot use.

Rules (each refusal is an :class:`InputError` naming the file):

- RGB images only.  Palette images are expanded to RGB.  RGBA/LA images lose
  their alpha channel (a slide export's alpha is opaque; a warning says so).
  Grayscale images are refused: H&E is colour, and a grayscale file in an
  image folder is almost always a mask in the wrong place.
- 8 bits per channel.  Pillow silently reads 16-bit RGB as 8-bit, so the raw
  mode is checked before decoding; 16-bit images are refused rather than
  rescaled by a guess.
- Masks are single-channel integer images (``L``, ``P`` indices, ``1``,
  ``I;16``/``I``); colour masks are refused.
- Pillow's decompression-bomb guard stays at its default (about 179 Mpx to
  refuse); larger images belong in a tiled TIFF read through the slide source.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pathsegdiff.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_MASK_MODES = ("L", "P", "1", "I;16", "I;16B", "I;16L", "I")


def _open(path: Path, what: str) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file")
        return Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: {e}; convert it to a tiled TIFF and extract it as a slide") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open {what}: {e}") from None


def _raw_mode(im: Image.Image) -> str:
    """The decoder's raw mode (e.g. 'RGB;16B'), which tells the stored bit depth."""
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(raw, str):
            return raw
    return im.mode


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an RGB image, checked from its header without decoding."""
    im = _open(path, "image")
    with im:
        check_rgb_mode(im, path)
        return im.size


def check_rgb_mode(im: Image.Image, path: Path) -> None:
    raw = _raw_mode(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F") or "16" in raw or "32" in raw:
        raise InputError(f"{path}: {raw} image has more than 8 bits per channel; convert it to 8-bit RGB")
    if im.mode in ("L", "1", "LA", "La"):
        raise InputError(f"{path}: grayscale image ({im.mode}); H&E tiles must be RGB (is this a mask?)")
    if im.mode not in ("RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr"):
        raise InputError(f"{path}: unsupported image mode {im.mode}; expected 8-bit RGB")


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image to (H, W, 3) uint8, after :func:`check_rgb_mode`."""
    im = _open(path, "image")
    with im:
        check_rgb_mode(im, path)
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged data
            raise InputError(f"{path}: cannot decode image ({e})") from None
        if im.mode in ("RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
            warnings.warn(f"{path}: dropping the alpha channel", stacklevel=2)
        rgb = im.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


def mask_size(path: Path) -> tuple[int, int]:
    im = _open(path, "mask")
    with im:
        _check_mask_mode(im, path)
        return im.size


def _check_mask_mode(im: Image.Image, path: Path) -> None:
    if im.mode not in _MASK_MODES:
        raise InputError(
            f"{path}: mask mode {im.mode}; masks must be single-channel class indices (L, P or 16-bit), "
            "not colours"
        )


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask to (H, W) int64 class or instance ids."""
    im = _open(path, "mask")
    with im:
        _check_mask_mode(im, path)
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{path}: cannot decode mask ({e})") from None
        return np.asarray(im).astype(np.int64)


def check_labels(mask: np.ndarray, n_classes: int, ignore_index: int, path: Path) -> np.ndarray:
    """Class ids as uint8; refuse values that are neither a class nor the ignore value."""
    bad = (mask >= n_classes) & (mask != ignore_index) | (mask < 0)
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad])[:8])
        raise InputError(
            f"{path}: mask values {values} are outside the declared classes 0..{n_classes - 1} "
            f"(and ignore {ignore_index})"
        )
    return mask.astype(np.uint8)
