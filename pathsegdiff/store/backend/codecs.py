"""The zarr codecs behind the codec names of ``schema.ArraySpec``.

Every chunk ends with a ``crc32c`` checksum so that a flipped or truncated
chunk fails to decode instead of returning wrong numbers.  ``bench/store_io.py``
measures the feature codecs; the README explains the default.  ``chunk_io.py``
encodes and decodes whole-tile chunks of these codecs off zarr's event loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec

from pathsegdiff.store.schema import ArraySpec, parse_codec


def array_codecs(spec: ArraySpec) -> dict[str, Any]:
    """``filters``/``compressors`` keyword arguments for creating the array ``spec`` describes."""
    if spec.codecs in ("checked", "checked-zstd"):
        return checked_codecs(compress=spec.codecs == "checked-zstd")
    return feature_codecs(spec.codecs, spec.dtype)


def feature_codecs(name: str, dtype: str) -> dict[str, Any]:
    """``filters``/``compressors`` keyword arguments for ``zarr.create_array``."""
    parse_codec(name)
    typesize = np.dtype(dtype).itemsize  # 1 for int8 values, 2 for float16, 4 for float32
    filters: list[Any] = []
    compressors: list[Any] = []
    if name == "lz4":
        compressors.append(BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=typesize))
    elif name == "zstd":
        compressors.append(BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=typesize))
    elif name == "bitround7-zstd":
        from zarr.codecs.numcodecs import BitRound

        filters.append(BitRound(keepbits=7))
        compressors.append(BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=typesize))
    compressors.append(Crc32cCodec())
    return {"filters": filters, "compressors": compressors}


def checked_codecs(compress: bool = False) -> dict[str, Any]:
    """Codecs for labels, rgb and the tile table: checksummed, optionally zstd.

    zstd level 1, not 3: on real H&E rgb tiles (bench/extract.py's) level 1
    compressed better (1.15x against 1.12x) in a third of the time (0.38 against
    1.15 ms per 256 px tile), which at GPU rates is a core's worth per 800 tiles/s.
    """
    compressors: list[Any] = [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")] if compress else []
    compressors.append(Crc32cCodec())
    return {"filters": [], "compressors": compressors}



def create_array(group: Any, spec: ArraySpec, n_tiles: int) -> Any:
    """The zarr array ``spec`` describes, in ``group`` (a ``zarr.Group``), with ``n_tiles`` tiles if per tile."""
    dtype = str if spec.dtype == "str" else spec.dtype
    if not spec.per_tile:  # a PCA basis: one chunk, written once
        return group.create_array(spec.name, shape=spec.shape, chunks=spec.shape, dtype=dtype,
                                  fill_value=spec.fill_value, dimension_names=spec.dims, **array_codecs(spec))
    keys = {"chunk_key_encoding": {"name": "default", "separator": "."}} if spec.key_separator == "." else {}
    return group.create_array(
        spec.name, shape=(n_tiles, *spec.shape), chunks=(spec.chunk_tiles, *spec.shape), dtype=dtype,
        fill_value=spec.fill_value, shards=(spec.shard_tiles, *spec.shape) if spec.shard_tiles else None,
        dimension_names=spec.dims, **keys, **array_codecs(spec))
