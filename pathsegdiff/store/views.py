"""Dask and xarray views of a store (``FeatureStore.to_dask`` / ``to_xarray``): lazy, one chunk per tile."""

from __future__ import annotations

from typing import Any

import numpy as np

from pathsegdiff.store import schema as S


def dask_array(store, name: str):
    """``store``: a ``FeatureStore`` (reader.py, which imports this module)."""
    import dask.array as da

    return da.from_zarr(store._array(name))


def xarray_dataset(store, blocks: Any = None, timesteps: Any = None):
    import xarray as xr

    blocks, timesteps = store._check_selection(blocks, timesteps)
    schema = store.schema
    names = [S.feature_path(t, b) for t in timesteps for b in blocks]
    names += [n for n, keep in ((S.LABELS, schema.has_labels), (S.RGB, schema.store_rgb),
                                (S.SSL, schema.ssl_dim)) if keep]
    data = {}
    for name in names:
        dims = store._array(name).metadata.dimension_names
        data[name.removeprefix(f"{S.FEATURES_GROUP}/")] = (dims, dask_array(store, name))
    coords = {"tile": np.arange(store.n_tiles), **{c: ("tile", v) for c, v in store.table().items()}}
    return xr.Dataset(data, coords=coords, attrs={"identity": store.identity, "schema_version": S.SCHEMA_VERSION})
