"""Fill a feature store (create.py creates or reopens it).

A tile is written all-or-nothing: its feature, label, rgb, ssl and latent
chunks are written first (each chunk write is an atomic file replace, as in
zarr's LocalStore), and only then is its status set to written.  A writer
killed in between leaves status "todo", and a resume rewrites the tile; a
writer killed inside a chunk write leaves a temporary file, which the next
writer removes (``partial.py``).

Speed (bench/store_io.py): ``batch_check.py`` checks a batch first
(finiteness by a bit test on the exponent, or the caller's verdict from the
GPU); then every chunk of the batch is checksummed and written at once on a
thread pool (``chunk_io.py``: zarr's bytes, without zarr's single event-loop
thread), and the status chunk after them.  BitRound and sharded arrays keep
zarr's own codec pipeline.  ``timings`` adds up where the time goes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from pathsegdiff.errors import SchemaError
from pathsegdiff.store.backend import chunk_io
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.zarr_compat import chunk_key, setitem, sync
from pathsegdiff.store.batch_check import check_batch
from pathsegdiff.store.backend.location import Location
from pathsegdiff.store.backend.lock import StoreLock
from pathsegdiff.store.backend.partial import remove_partial_writes
from pathsegdiff.store.reader import FeatureStore
from pathsegdiff.store.tile_table import write_table
from pathsegdiff.store.backend.write_errors import settle_pending_writes, write_errors


def _setitem(arr: zarr.Array, start: int, stop: int, data: np.ndarray):
    return lambda: setitem(arr, slice(start, stop), data)


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
    data only and collects what it would have set (written and failed tiles,
    handed over by ``take_collected``) for the coordinator, which owns the
    status and records them when the range returns (``mark_written``,
    ``mark_failed``).
    """

    def __init__(self, loc: Location, lock: StoreLock | None, owns_status: bool = True):
        super().__init__(loc, writable=True)
        self._lock = lock
        self.owns_status = owns_status
        self._collected_written: list[int] = []  # collected by a writer that does not own the status
        self._collected_failed: list[tuple[int, str]] = []
        self._status = np.asarray(self.array(S.STATUS)[:], dtype=np.uint8)
        # Seconds by stage, summed over write() calls: validate, compact (a compact preset's encoding), chunks
        # (wall time of all chunk writes), status; encode (checksums, blosc) and io (file writes) are summed
        # over the threads that did them.
        self.timings = dict.fromkeys(("validate", "compact", "chunks", "status", "encode", "io", "tiles"), 0.0)
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
        group = self.group()
        with write_errors(self.location, "new tile rows"):
            # every per-tile array; the optional cohort columns are grown with their rows (grow.begin_append)
            for spec in (a for a in S.store_arrays(self.schema) if a.per_tile and not a.optional):
                arr = group[spec.name]
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
    def write(self, indices: Iterable[int] | slice | range, batch: S.TileBatch,
              finite: Mapping[int, Mapping[str, Any]] | None = None, encoded: Mapping[str, Any] | None = None) -> None:
        """Write B tiles at ``indices``; their status becomes written only after all arrays are.

        ``finite[t][block]``: (B,) bools, tile k's features hold no inf or NaN,
        computed by the caller where the features were made (on the GPU, where
        it costs nothing); None: the writer checks them itself.  ``encoded``:
        a compact store's feature arrays already encoded where they were made
        (array path -> array; extract/device_encoding.py on a GPU), in place of
        ``batch.features``: the writer checks them and skips its own encoding.
        """
        t0 = time.perf_counter()
        idx = self._indices(indices)
        arrays = check_batch(self.location, self.schema, self.tile_ids(idx), batch, finite, encoded)
        tc = time.perf_counter()
        if encoded is None:
            try:
                arrays = self.encoding.encode(arrays)  # int8 codes and scale/offset, PCA coefficients (encoded.py)
            except SchemaError as e:  # e.g. float16 coefficients that overflow: name the store and the tiles
                raise SchemaError(f"{self.location}: tiles {list(self.tile_ids(idx)[:5])}: {e}") from None
        t1 = time.perf_counter()
        runs = _runs(idx)
        direct, pipeline = [], []
        for name, data in arrays.items():
            arr, codec = self.array(name), self._codec(name)
            if codec is None or not codec.whole_tiles:  # BitRound, shards: zarr's own codec pipeline
                pipeline += [_setitem(arr, a, b, data[pos : pos + (b - a)]) for pos, a, b in runs]
            else:
                tail = (0,) * (data.ndim - 1)
                direct += [(chunk_key(arr, (int(i), *tail)), codec, data[k]) for k, i in enumerate(idx)]
        root = str(self.location.local_dir) if self.location.kind == "dir" else None
        spent = {}

        with write_errors(self.location, f"tiles {list(self.tile_ids(idx)[:5])}"):
            try:
                spent = chunk_io.write_chunks(self.zarr_store, root, direct, pipeline)  # every chunk at once
            except BaseException:
                sync(settle_pending_writes())
                raise
            t2 = time.perf_counter()
            self._set_status(idx, S.STATUS_WRITTEN)
        t3 = time.perf_counter()
        for key, seconds in (("validate", tc - t0), ("compact", t1 - tc), ("chunks", t2 - t1), ("status", t3 - t2),
                             *spent.items()):
            self.timings[key] += seconds
        self.timings["tiles"] += len(idx)

    def take_collected(self) -> tuple[list[int], list[tuple[int, str]]]:
        """(written, failed) collected since the last call by a writer that does not own the status."""
        out = (self._collected_written, self._collected_failed)
        self._collected_written, self._collected_failed = [], []
        return out

    def mark_failed(self, indices: Iterable[int], reasons: Sequence[str]) -> None:
        """Record tiles whose input could not be used; they hold no data."""
        idx = self._indices(indices)
        if len(reasons) != len(idx):
            raise SchemaError("mark_failed needs one reason per tile")
        if not self.owns_status:
            self._collected_failed.extend(zip(map(int, idx), map(str, reasons)))
            return
        arr = self.array(S.FAIL_REASON)
        with write_errors(self.location, "failed-tile reasons"):
            for i, r in zip(idx, reasons):
                arr[int(i)] = str(r)[:500]
            self._set_status(idx, S.STATUS_FAILED)

    def mark_written(self, indices: Iterable[int]) -> None:
        """Set written for tiles whose arrays another writer has completed (a distributed run's
        workers write data only; the coordinator, which owns the status, calls this when a range returns)."""
        with write_errors(self.location, "tile status"):
            self._set_status(self._indices(indices), S.STATUS_WRITTEN)

    def _set_status(self, idx: np.ndarray, value: int) -> None:
        if not self.owns_status:
            if value == S.STATUS_WRITTEN:
                self._collected_written.extend(int(i) for i in idx)
            return
        before = self._status.copy()
        self._status[idx] = value
        arr, codec = self.array(S.STATUS), self._codec(S.STATUS)
        # Rewrite whole chunks from the in-memory copy: one atomic write per chunk (a file, on a local store).
        try:
            for c in np.unique(idx // S.TABLE_CHUNK):
                a, b = int(c) * S.TABLE_CHUNK, min((int(c) + 1) * S.TABLE_CHUNK, len(self._status))
                if codec is None or self.location.kind != "dir":
                    arr[a:b] = self._status[a:b]
                    continue
                chunk = np.full(codec.shape, arr.fill_value, np.uint8)  # zarr pads the last chunk the same way
                chunk[: b - a] = self._status[a:b]
                chunk_io.put_file(os.path.join(self.location.local_dir, chunk_key(arr, (int(c),))), codec.encode(chunk))
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
