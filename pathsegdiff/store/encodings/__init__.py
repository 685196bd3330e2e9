"""Compact encodings of stored features: presets, int8 quantisation, PCA projection (pure numpy).

Nothing here knows zarr: the store applies these functions to the arrays it
writes and reads (see docs/store-format.md for the layout).
"""

from pathsegdiff.store.encodings.block import EncodedBlock, decode_block, encode_block, relative_error
from pathsegdiff.store.encodings.int8 import dequantise_int8, int8_error_bound, quantise_int8
from pathsegdiff.store.encodings.pca import PCABasis, bases_sha256, calibration_tiles, fit_bases, fit_pca
from pathsegdiff.store.encodings.preset import DEFAULT_PRESET, Calibration, Encoding, parse_preset

__all__ = [
    "DEFAULT_PRESET", "Calibration", "EncodedBlock", "Encoding", "PCABasis", "bases_sha256", "calibration_tiles",
    "decode_block", "fit_bases", "dequantise_int8", "encode_block", "fit_pca", "int8_error_bound", "parse_preset",
    "quantise_int8", "relative_error",
]
