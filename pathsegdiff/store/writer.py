"""Fill a feature store (create.py creates or reopens it).

A tile is written all-or-nothing: its feature, label, rgb, ssl and latent
chunks are written first (each chunk write is an atomic file replace in
zarr's LocalStore), and only then is its status set to written.  A writer
killed in between leaves status "todo", and a resume rewrites the tile; a
writer killed inside a chunk write leaves zarr's temporary file, which the
next writer removes (``partial.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from pathsegdiff.errors import (
    SchemaError,
)
from pathsegdiff.store import schema as S
from pathsegdiff.store.location import Location
from pathsegdiff.store.write_errors import settle_pending_writes, write_errors
from pathsegdiff.store.lock import StoreLock
from pathsegdiff.store.partial import remove_partial_writes
from pathsegdiff.store.reader import FeatureStore


def _runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted-or-not indices into (position in batch, start, stop) contiguous runs."""
    out, i = [], 0
    while i < len(idx):
        j = i + 1
        while j < len(idx) and idx[j] == idx[j - 1] + 1:
            j += 1
        out.append((i, int(idx[i]), int(idx[j - 1]) + 1))
        i = j
    return out


class StoreWriter(FeatureStore):
    """A store opened for writing by this process alone (it holds the lock).

    ``owns_status=False`` is a distributed run's range worker: it writes tile
    data only and collects what it would have set (``written``, ``failed``)
    for the coordinator, which owns the status and records them when the
    range returns (``mark_written``, ``mark_failed``).
    """

    def __init__(self, loc: Location, lock: StoreLock | None, owns_status: bool = True):
        super().__init__(loc, writable=True)
        self._lock = lock
        self.owns_status = owns_status
        self.written: list[int] = []  # collected by a writer that does not own the status
        self.failed: list[tuple[int, str]] = []
        self._status = np.asarray(self._array(S.STATUS)[:], dtype=np.uint8)
        if lock is not None and lock.held and loc.local_dir is not None:
            with write_errors(loc, "the clean-up of an interrupted write"):
                remove_partial_writes(loc.local_dir)  # left by a writer killed mid-object

    # -- tile table ----------------------------------------------------------
    def append_tiles(self, records: Sequence[S.TileRecord]) -> np.ndarray:
        """Add rows to a growable store; returns their indices."""
        if self.schema.n_tiles is not None:
            raise SchemaError(f"{self.location}: fixed-size store ({self.schema.n_tiles} tiles); cannot append")
        start = self.n_tiles
        stop = start + len(records)
        group = self._group()
        with write_errors(self.location, "new tile rows"):
            for name in _all_tile_arrays(self.schema):
                arr = group[name]
                arr.resize((stop, *arr.shape[1:]))
            write_table(group, start, records)
        self._status = np.concatenate([self._status, np.zeros(len(records), np.uint8)])
        self._invalidate()
        return np.arange(start, stop)

    # -- resume --------------------------------------------------------------
    def missing(self) -> np.ndarray:
        """Indices of tiles not yet written (status todo)."""
        return np.flatnonzero(self._status == S.STATUS_TODO)

    def status(self) -> np.ndarray:
        return self._status.copy()

    # -- writing -------------------------------------------------------------
    def write(self, indices: Iterable[int] | slice | range, batch: S.TileBatch) -> None:
        """Write B tiles at ``indices``; their status becomes written only after all arrays are."""
        idx = self._indices(indices)
        arrays = self._validate(idx, batch)
        runs = _runs(idx)
        targets = [(self._array(name)._async_array, data) for name, data in arrays.items()]

        async def put_all() -> None:  # every array of the batch concurrently: one wait, not one per array
            done = await asyncio.gather(*(
                arr.setitem(slice(a, b), data[pos : pos + (b - a)]) for arr, data in targets for pos, a, b in runs
            ), return_exceptions=True)  # let every write settle before reporting a failure
            for r in done:
                if isinstance(r, BaseException):
                    raise r

        with write_errors(self.location, f"tiles {list(self.tile_ids(idx)[:5])}"):
            try:
                sync(put_all())
            except BaseException:
                sync(settle_pending_writes())
                raise
            self._set_status(idx, S.STATUS_WRITTEN)

    def take_collected(self) -> tuple[list[int], list[tuple[int, str]]]:
        """(written, failed) collected since the last call by a writer that does not own the status."""
        out = (self.written, self.failed)
        self.written, self.failed = [], []
        return out

    def mark_failed(self, indices: Iterable[int], reasons: Sequence[str]) -> None:
        """Record tiles whose input could not be used; they hold no data."""
        idx = self._indices(indices)
        if len(reasons) != len(idx):
            raise SchemaError("mark_failed needs one reason per tile")
        if not self.owns_status:
            self.failed.extend(zip(map(int, idx), map(str, reasons)))
            return
        arr = self._array(S.FAIL_REASON)
        with write_errors(self.location, "failed-tile reasons"):
            for i, r in zip(idx, reasons):
                arr[int(i)] = str(r)[:500]
            self._set_status(idx, S.STATUS_FAILED)

    def mark_written(self, indices: Iterable[int]) -> None:
        """Set written for tiles whose arrays another writer has completed (a distributed run's
        workers write data only; the coordinator, which owns the status, calls this when a range returns)."""
        with write_errors(self.location, "tile status"):
            self._set_status(self._indices(indices), S.STATUS_WRITTEN)

    def reset_tiles(self, indices: Iterable[int]) -> None:
        """Mark tiles todo again (after verify found them damaged) so a resume rewrites them."""
        self._set_status(self._indices(indices), S.STATUS_TODO)

    def _set_status(self, idx: np.ndarray, value: int) -> None:
        if not self.owns_status:
            if value == S.STATUS_WRITTEN:
                self.written.extend(int(i) for i in idx)
            return
        before = self._status.copy()
        self._status[idx] = value
        arr = self._array(S.STATUS)
        # Rewrite whole chunks from the in-memory copy: one atomic write per chunk.
        try:
            for c in np.unique(idx // S.TABLE_CHUNK):
                a, b = int(c) * S.TABLE_CHUNK, min((int(c) + 1) * S.TABLE_CHUNK, len(self._status))
                arr[a:b] = self._status[a:b]
        except BaseException:
            self._status = before  # the file keeps the old status, and so must the copy that missing() reads
            raise

    def _indices(self, indices: Iterable[int] | slice | range) -> np.ndarray:
        if isinstance(indices, slice):
            indices = range(*indices.indices(self.n_tiles))
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= self.n_tiles)):
            raise SchemaError(f"{self.location}: tile indices out of range 0..{self.n_tiles - 1}")
        if len(np.unique(idx)) != len(idx):
            raise SchemaError(f"{self.location}: repeated tile indices in one write")
        return idx

    def _validate(self, idx: np.ndarray, batch: S.TileBatch) -> dict[str, np.ndarray]:
        """Check every array of the batch against the schema; return path -> array to write."""
        sch, spec, n = self.schema, self.schema.features, len(idx)
        s = sch.tile_size
        out: dict[str, np.ndarray] = {}
        ids = self.tile_ids(idx)

        def need(name: str, value: Any, shape: tuple, dtype: str, cast: bool = False) -> None:
            if value is None:
                raise SchemaError(f"{self.location}: batch lacks {name}, which the store declares")
            a = np.asarray(value)
            if a.shape != shape:
                raise SchemaError(f"{self.location}: {name} has shape {a.shape}, expected {shape}")
            if not cast and a.dtype != np.dtype(dtype):
                raise SchemaError(f"{self.location}: {name} has dtype {a.dtype}, expected {dtype}")
            out[name] = a.astype(dtype, copy=False)

        if set(batch.features) != set(spec.timesteps):
            raise SchemaError(
                f"{self.location}: batch has timesteps {sorted(batch.features)}, store declares {list(spec.timesteps)}"
            )
        for t in spec.timesteps:
            got = batch.features[t]
            if set(got) != {b.name for b in spec.blocks}:
                raise SchemaError(
                    f"{self.location}: batch at t={t} has blocks {sorted(got)}, "
                    f"store declares {[b.name for b in spec.blocks]}"
                )
            for b in spec.blocks:
                name = S.feature_path(t, b.name)
                need(name, got[b.name], (n, *b.shape), spec.dtype, cast=True)
                bad = ~np.isfinite(out[name].reshape(n, -1)).all(axis=1)
                if bad.any():
                    raise SchemaError(
                        f"{self.location}: non-finite features in {name} for tiles {list(ids[bad][:10])}"
                    )
        if sch.has_labels:
            need(S.LABELS, batch.labels, (n, s, s), "uint8")
            lab = out[S.LABELS]
            bad = (lab >= len(sch.class_names)) & (lab != sch.ignore_index)
            if bad.any():
                rows = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
                raise SchemaError(
                    f"{self.location}: labels outside classes 0..{len(sch.class_names) - 1} "
                    f"(ignore {sch.ignore_index}) in tiles {list(ids[rows][:10])}"
                )
        if sch.store_instances:
            need(S.INSTANCES, batch.instances, (n, s, s), "int32", cast=True)
        if sch.store_rgb:
            need(S.RGB, batch.rgb, (n, 3, s, s), "uint8")
        if sch.ssl_dim:
            need(S.SSL, batch.ssl, (n, sch.ssl_dim), "float32", cast=True)
        if sch.latent_shape:
            need(S.LATENT, batch.latent, (n, *sch.latent_shape), "float32", cast=True)
        return out

    # -- lifetime ------------------------------------------------------------
    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        raise TypeError("a StoreWriter holds the store lock and cannot be sent to another process")


# -- creation ------------------------------------------------------------------
def _all_tile_arrays(sch: S.StoreSchema) -> list[str]:
    names = [f"{S.TILES_GROUP}/{c}" for c in S.TILE_COLUMNS] + [S.STATUS, S.FAIL_REASON]
    return names + _data_arrays(sch)


def _data_arrays(sch: S.StoreSchema) -> list[str]:
    names = [S.feature_path(t, b.name) for t in sch.features.timesteps for b in sch.features.blocks]
    names += [S.LABELS] if sch.has_labels else []
    names += [S.INSTANCES] if sch.store_instances else []
    names += [S.RGB] if sch.store_rgb else []
    names += [S.SSL] if sch.ssl_dim else []
    names += [S.LATENT] if sch.latent_shape else []
    return names


def write_table(group: zarr.Group, start: int, records: Sequence[S.TileRecord]) -> None:
    if not records:
        return
    stop = start + len(records)
    # Every table and status chunk is written, even when it equals the fill value, so that
    # a missing one is damage that verify can name (not an all-todo or all-zero column).
    every_chunk = {"write_empty_chunks": True}
    for col, dtype in S.TILE_COLUMNS.items():
        values = [getattr(r, col) for r in records]
        column = group[f"{S.TILES_GROUP}/{col}"].with_config(every_chunk)
        column[start:stop] = np.asarray(values, dtype=object if dtype == "str" else dtype)
    group[S.STATUS].with_config(every_chunk)[start:stop] = np.zeros(stop - start, np.uint8)
