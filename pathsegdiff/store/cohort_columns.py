"""The tile table's cohort columns: patient, pyramid level, annotated fraction.

They sit beside the first columns (``tiles/patient``, ...) with the same
chunking, but were added later: a store made before them has none, and
reads as the defaults in ``schema.COHORT_COLUMNS``.  The writer's
``append_tiles`` grows the first columns; :func:`resize_columns` and
:func:`write_columns` do the same for these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from pathsegdiff.store import schema as S
from pathsegdiff.store.codecs import checked_codecs


def column_path(name: str) -> str:
    return f"{S.TILES_GROUP}/{name}"


def create_columns(group: zarr.Group, n: int, chunk: int) -> None:
    for name, (dtype, default) in S.COHORT_COLUMNS.items():
        group.create_array(column_path(name), shape=(n,), chunks=(chunk,), dtype=str if dtype == "str" else dtype,
                           fill_value=default, dimension_names=("tile",), **checked_codecs(compress=True))


def has_columns(group: zarr.Group) -> bool:
    return all(column_path(name) in group for name in S.COHORT_COLUMNS)


def resize_columns(group: zarr.Group, n: int) -> None:
    for name in S.COHORT_COLUMNS:
        arr = group[column_path(name)]
        if arr.shape[0] != n:
            arr.resize((n,))


def write_columns(group: zarr.Group, start: int, records: Sequence[S.TileRecord]) -> None:
    """Rows ``start..start+len(records)``; every chunk is written, as the first columns' are."""
    if not records:
        return
    stop = start + len(records)
    for name, (dtype, _) in S.COHORT_COLUMNS.items():
        values = np.asarray([getattr(r, name) for r in records], dtype=object if dtype == "str" else dtype)
        group[column_path(name)].with_config({"write_empty_chunks": True})[start:stop] = values


def read_columns(fs) -> dict[str, np.ndarray]:
    """The cohort columns of a store (a ``FeatureStore``), the defaults where the store predates them."""
    group, n = fs._group(), fs.n_tiles
    out = {}
    for name, (dtype, default) in S.COHORT_COLUMNS.items():
        if column_path(name) in group:
            out[name] = np.asarray(fs._read(column_path(name), slice(None)), dtype=object if dtype == "str" else dtype)
        else:
            out[name] = np.full(n, default, dtype=object if dtype == "str" else dtype)
    return out


def full_table(fs) -> dict[str, np.ndarray]:
    """The tile table with its cohort columns, plus ``status``."""
    return {**fs.table(), **read_columns(fs)}
