"""One block's features in and out of an encoding: the values to store, and the way back.

``encode_block`` turns (B, C, h, w) float features into what a store holds
for them: the values (float16 features, int8 codes, or PCA coefficients in
float16 or int8) and, for int8, the (B, 2, K) scale/offset.  ``decode_block``
is the way back to float features: float16 stays as stored, every compact
encoding decodes to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pathsegdiff.errors import SchemaError
from pathsegdiff.store.encodings.int8 import dequantise_int8, quantise_int8
from pathsegdiff.store.encodings.pca import PCABasis
from pathsegdiff.store.encodings.preset import Encoding


@dataclass(frozen=True, eq=False)
class EncodedBlock:
    """``values`` (B, K, h, w) float16 or int8; ``quant`` (B, 2, K) float32 scale/offset for int8, else None."""

    values: np.ndarray
    quant: np.ndarray | None = None


def encode_block(x: np.ndarray, encoding: Encoding, basis: PCABasis | None = None) -> EncodedBlock:
    """(B, C, h, w) float features -> the arrays a store of ``encoding`` holds for them."""
    _check_basis(encoding, basis)
    values = basis.project(x) if basis is not None else np.asarray(x)
    if encoding.int8:
        codes, quant = quantise_int8(values)
        return EncodedBlock(codes, quant)
    with np.errstate(over="ignore"):  # an overflow is refused just below, with the fix
        stored = values.astype(np.float16)
    if basis is not None and not np.isfinite(stored).all():
        raise SchemaError(f"PCA coefficients overflow float16 (largest {float(np.abs(values).max()):.3g}); "
                          f"use --compact {encoding.name}-int8, which keeps a scale per channel")
    return EncodedBlock(stored)


def decode_block(values: np.ndarray, encoding: Encoding, quant: np.ndarray | None = None,
                 basis: PCABasis | None = None, coefficients: bool = False) -> np.ndarray:
    """Stored values (B, K, h, w) -> features (B, C, h, w); ``coefficients``: stop at the PCA coefficients
    (B, K, h, w), which a head whose first layer is a 1x1 convolution can take instead."""
    _check_basis(encoding, basis)
    if encoding.is_default:
        return np.asarray(values)
    if encoding.int8:
        if quant is None:
            raise SchemaError(f"{encoding.name} values need their scale/offset")
        x = dequantise_int8(values, quant)
    else:
        x = np.asarray(values, dtype=np.float32)
    return x if basis is None or coefficients else basis.reconstruct(x)


def relative_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    """||x - x_hat|| / ||x|| over the whole array (float64 sums); 0 for an all-zero x read back exactly."""
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    if x64.shape != y64.shape:
        raise SchemaError(f"shapes differ: {x64.shape} and {y64.shape}")
    num, den = float(np.linalg.norm(x64 - y64)), float(np.linalg.norm(x64))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def _check_basis(encoding: Encoding, basis: PCABasis | None) -> None:
    if encoding.uses_pca and basis is None:
        raise SchemaError(f"encoding {encoding.name} needs its PCA basis")
    if not encoding.uses_pca and basis is not None:
        raise SchemaError(f"encoding {encoding.name} has no PCA basis, but one was given")
