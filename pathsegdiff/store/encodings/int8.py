"""Per tile and channel affine int8 quantisation of feature maps.

For each tile and channel the values' range [lo, hi] is cut into 255 equal
steps: ``scale = (hi - lo) / 255`` and ``offset = lo + 128 * scale``, and a
value is stored as ``q = round((x - offset) / scale)`` in -128..127.  It is
read back as

    x ~= q * scale + offset

with an error of at most ``scale / 2`` (half a step) per value, up to float32
rounding.  A constant channel has scale 0 and reads back exactly.  Scale and
offset are float32 and travel beside the values as one (2, C) array per tile:
row 0 the scales, row 1 the offsets.

Every value depends only on its own tile and channel, so a tile quantises to
the same bytes whatever batch it comes in.
"""

from __future__ import annotations

import numpy as np

from pathsegdiff.errors import SchemaError

STEPS = 255  # int8 has 256 codes; 255 steps put lo at -128 and hi at 127
ZERO_CODE = 128  # the code of lo is -128: offset = lo + 128 * scale


def quantise_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, *spatial) float -> (int8 codes of the same shape, float32 (B, 2, C): scale, offset)."""
    x = np.asarray(x)
    if x.ndim < 3:
        raise SchemaError(f"int8 quantisation needs (tile, channel, ...) arrays, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    lo, hi = flat.min(axis=2), flat.max(axis=2)  # (B, C)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise SchemaError("int8 quantisation of features that hold inf or NaN")
    scale = ((hi - lo) / np.float32(STEPS)).astype(np.float32)
    offset = (lo + np.float32(ZERO_CODE) * scale).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.rint((flat - offset[..., None]) / safe[..., None])
    np.clip(q, -128, 127, out=q)
    codes = q.astype(np.int8).reshape(x.shape)
    codes[scale == 0] = 0  # a constant channel: every value is the offset (lo), exactly
    offset = np.where(scale > 0, offset, lo).astype(np.float32)
    return codes, np.stack([scale, offset], axis=1)


def dequantise_int8(codes: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """int8 (B, C, *spatial) codes and float32 (B, 2, C) scale/offset -> float32 values."""
    codes, quant = np.asarray(codes), np.asarray(quant, dtype=np.float32)
    if codes.dtype != np.int8:
        raise SchemaError(f"int8 codes expected, got {codes.dtype}")
    if quant.shape != (codes.shape[0], 2, codes.shape[1]):
        raise SchemaError(f"scale/offset of shape {quant.shape} do not fit codes of shape {codes.shape}")
    per_value = (codes.shape[0], codes.shape[1]) + (1,) * (codes.ndim - 2)  # broadcast over the spatial axes
    scale, offset = quant[:, 0].reshape(per_value), quant[:, 1].reshape(per_value)
    return codes.astype(np.float32) * scale + offset


def int8_error_bound(quant: np.ndarray) -> np.ndarray:
    """The largest error a value of each (tile, channel) can carry: half a step, (B, C)."""
    return np.asarray(quant, dtype=np.float32)[:, 0] / 2
