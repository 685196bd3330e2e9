"""Reads that would otherwise return fill values as data: a missing chunk, a store deleted while open.

zarr hands back an array's fill value for a chunk that does not exist.  Float
arrays are filled with NaN and written values are always finite, so NaN in a
tile means its chunk is missing; integer arrays (labels, rgb, instances) are
filled with 0, so an all-zero tile is checked against its chunk's key, and so
is a tile-table or status chunk that holds only fill values (the writer writes
every one of those).  Only that suspicious path costs a lookup.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pathsegdiff.errors import CorruptStoreError, StoreAccessError, StoreNotFoundError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.zarr_compat import chunk_key
from pathsegdiff.store.backend.location import redact

_TILE_ARRAYS = (S.LABELS, S.INSTANCES, S.RGB, S.SSL, S.LATENT)


def is_tile_array(name: str) -> bool:
    """Arrays with one chunk (or shard) per tile: features and what is stored beside them."""
    return name.startswith(S.FEATURES_GROUP + "/") or name in _TILE_ARRAYS


def chunk_exists(fs: Any, name: str, coords: tuple[int, ...]) -> bool:
    return fs.object_exists(chunk_key(fs.array(name), coords))


def check_present(fs: Any) -> None:
    """Raise when the store itself is gone (deleted or moved while it was open).

    Only a store that answers "no such object" is gone: a refused or failed request (credentials, network)
    raises its own error (a remote store's client errors are translated where the store is opened)."""
    try:
        there = fs.object_exists("zarr.json")
    except FileNotFoundError:
        there = False
    except PermissionError as e:
        raise StoreAccessError(f"{fs.location}: access denied checking the store is there ({redact(e)}); "
                               "check the credentials for this location") from None
    if not there:
        raise StoreNotFoundError(f"{fs.location}: the store is gone (deleted or moved while it was open)")


def _looks_unwritten(x: np.ndarray) -> bool:
    if not x.size:
        return False
    return bool(np.isnan(x.flat[0])) if x.dtype.kind == "f" else not x.any()


def _all_fill(x: np.ndarray, fill: Any) -> bool:
    if x.dtype.kind == "f" and np.isnan(fill):
        return bool(np.isnan(x).all())
    return bool((x == fill).all())


def check_missing(fs: Any, name: str, sel: Any, data: np.ndarray) -> None:
    """Raise instead of returning fill values read for a written tile, or a tile-table chunk, that has no chunk."""
    if (name == S.STATUS or name.startswith(S.TILES_GROUP + "/")) and name != S.FAIL_REASON:
        # The writer writes every table and status chunk: rows read by slice or by sorted indices are checked
        # chunk by chunk (a single value, read per tile, is left to the whole-column reads).
        if isinstance(sel, (int, np.integer)):
            return
        arr = fs.array(name)
        chunk, fill, n = arr.chunks[0], arr.fill_value, arr.shape[0]
        rows = np.arange(n)[sel] if isinstance(sel, slice) else np.asarray(sel, dtype=np.int64).reshape(-1)
        values = np.asarray(data).reshape(-1)
        if not len(rows) or len(rows) != len(values) or (len(rows) > 1 and (np.diff(rows) < 0).any()):
            return
        which = rows // chunk
        edges = [0, *(np.flatnonzero(np.diff(which)) + 1), len(rows)]
        for a, b in zip(edges[:-1], edges[1:]):
            c = int(which[a])
            if _all_fill(values[a:b], fill) and not chunk_exists(fs, name, (c,)):
                check_present(fs)
                raise CorruptStoreError(
                    f"{fs.location}: {name} chunk {c} is missing (tile table damaged); run 'pathsegdiff store verify'"
                )
        return
    if not is_tile_array(name):
        return
    n = fs.n_tiles
    if isinstance(sel, (int, np.integer)):
        tiles, rows = [int(sel) % max(n, 1)], [data]
    elif isinstance(sel, slice):
        tiles, rows = list(range(*sel.indices(n))), list(data)
    else:
        return
    suspect = [(i, r) for i, r in zip(tiles, rows) if _looks_unwritten(np.asarray(r))]
    if not suspect:
        return
    check_present(fs)
    status = fs.status()
    shard = fs.schema.shard_tiles
    for i, r in suspect:
        if status[i] != S.STATUS_WRITTEN:
            continue  # a todo or failed tile holds no data: fill values are what it has
        coords = (i // shard,) + (0,) * (np.ndim(r))
        if np.asarray(r).dtype.kind == "f" or not chunk_exists(fs, name, coords):
            raise CorruptStoreError(
                f"{fs.location}: tile {i} ({fs.tile_ids()[i]}) is marked written but its {name} chunk "
                "is missing; run 'pathsegdiff store verify'"
            )
