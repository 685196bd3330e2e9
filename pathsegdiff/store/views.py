"""Dask and xarray views of a store (``FeatureStore.to_dask`` / ``to_xarray``): lazy, one chunk per tile.

The xarray view's features are decoded (``encoded.py``): a compact store's
blocks read as float32 features (tile, C, h, w), as ``read_tile`` gives them;
``to_dask(name)`` is any stored array as it is on disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pathsegdiff.store import schema as S


def dask_array(store, name: str):
    """``store``: a ``FeatureStore`` (reader.py, which imports this module)."""
    import dask.array as da

    return da.from_zarr(store.array(name))


def decoded_features(store, timestep: int, block: str):
    """One block at one timestep as a dask array of decoded features (tile, C, h, w), one chunk per tile."""
    import dask.array as da

    enc = store.encoding
    names = enc.stored_arrays(timestep, block)
    if enc.is_default:
        return dask_array(store, names[0])
    values = dask_array(store, names[0])  # (tile, K, h, w)
    channels = store.schema.features.block(block).channels

    def decode(*stored: np.ndarray) -> np.ndarray:
        return enc.decode(timestep, block, list(stored))

    # Each tile's chunk of the values meets the same tile's scale/offset (tile, 2, K); K is consumed, C made.
    args = [values, "tkyx"] + ([dask_array(store, names[1]), "tqk"] if len(names) == 2 else [])
    return da.blockwise(decode, "tcyx", *args, new_axes={"c": channels}, concatenate=True, dtype=np.float32,
                        meta=np.empty((0, 0, 0, 0), np.float32))


def xarray_dataset(store, blocks: Any = None, timesteps: Any = None):
    import xarray as xr

    blocks, timesteps = store.check_selection(blocks, timesteps)
    schema = store.schema
    data = {}
    for t in timesteps:
        for b in blocks:
            data[f"t{t}/{b}"] = (("tile", f"c_{b}", f"h_{b}", f"w_{b}"), decoded_features(store, t, b))
    for spec in S.data_arrays(schema):
        if spec.kind in (S.LABELS, S.RGB, S.SSL):
            data[spec.name] = (spec.dims, dask_array(store, spec.name))
    coords = {"tile": np.arange(store.n_tiles), **{c: ("tile", v) for c, v in store.table().items()}}
    attrs = {"identity": store.identity, "schema_version": S.SCHEMA_VERSION,
             "encoding": schema.features.encoding}
    return xr.Dataset(data, coords=coords, attrs=attrs)
