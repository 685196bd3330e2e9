"""Create, resume and fill a feature store.

A tile is written all-or-nothing: its feature, label, rgb, ssl and latent
chunks are written first (each chunk write is an atomic file replace in
zarr's LocalStore), and only then is its status set to written.  A writer
killed in between leaves status "todo", and a resume rewrites the tile; a
writer killed inside a chunk write leaves zarr's temporary file, which the
next writer removes (``partial.py``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import errno
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from pathsegdiff import __version__
from pathsegdiff.errors import (
    IdentityMismatchError,
    NotAStoreError,
    PathsegdiffError,
    SchemaError,
    StoreExistsError,
    StoreReadOnlyError,
    StoreWriteError,
)
from pathsegdiff.store import schema as S
from pathsegdiff.store.codecs import checked_codecs, feature_codecs
from pathsegdiff.store.location import Location, open_zarr_store, parse_location, redact
from pathsegdiff.store.lock import StoreLock
from pathsegdiff.store.partial import remove_partial_writes
from pathsegdiff.store.reader import FeatureStore, read_root_attrs


@contextmanager
def write_errors(loc: Location, what: str) -> Iterator[None]:
    """Turn an OSError while writing (disk full, file-size limit, no permission) into one clear store error."""
    try:
        yield
    except PathsegdiffError:
        raise
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "; check the credentials for this location" if loc.kind == "url" else ""
            raise StoreReadOnlyError(
                f"{loc}: cannot write {what}: permission denied ({redact(e.strerror or e)}){hint}"
            ) from e
        reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file size limit exceeded"}.get(e.errno, redact(e.strerror or e))
        raise StoreWriteError(
            f"{loc}: writing {what} failed: {reason}. Tiles not yet written stay todo: "
            "free space (or raise the limit) and rerun to resume"
        ) from e


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
    """A store opened for writing by this process alone (it holds the lock)."""

    def __init__(self, loc: Location, lock: StoreLock | None):
        super().__init__(loc, writable=True)
        self._lock = lock
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
            _write_table(group, start, records)
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
            sync(put_all())
            self._set_status(idx, S.STATUS_WRITTEN)

    def mark_failed(self, indices: Iterable[int], reasons: Sequence[str]) -> None:
        """Record tiles whose input could not be used; they hold no data."""
        idx = self._indices(indices)
        if len(reasons) != len(idx):
            raise SchemaError("mark_failed needs one reason per tile")
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

    def mark_verified(self, indices: Iterable[int]) -> None:
        idx = self._indices(indices)
        idx = idx[self._status[idx] == S.STATUS_WRITTEN]
        if len(idx):
            self._set_status(idx, S.STATUS_VERIFIED)

    def reset_tiles(self, indices: Iterable[int]) -> None:
        """Mark tiles todo again (after verify found them damaged) so a resume rewrites them."""
        self._set_status(self._indices(indices), S.STATUS_TODO)

    def _set_status(self, idx: np.ndarray, value: int) -> None:
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


def _write_table(group: zarr.Group, start: int, records: Sequence[S.TileRecord]) -> None:
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


def _create_arrays(group: zarr.Group, sch: S.StoreSchema, n: int) -> None:
    table = min(S.TABLE_CHUNK, max(n, 1)) if sch.n_tiles is not None else S.TABLE_CHUNK
    for col, dtype in S.TILE_COLUMNS.items():
        fill = "" if dtype == "str" else (np.nan if dtype.startswith("float") else 0)
        group.create_array(
            f"{S.TILES_GROUP}/{col}", shape=(n,), chunks=(table,), dtype=str if dtype == "str" else dtype,
            fill_value=fill, dimension_names=("tile",), **checked_codecs(compress=True),
        )
    group.create_array(S.STATUS, shape=(n,), chunks=(S.TABLE_CHUNK,), dtype="uint8", fill_value=0,
                       dimension_names=("tile",), **checked_codecs())
    group.create_array(S.FAIL_REASON, shape=(n,), chunks=(S.TABLE_CHUNK,), dtype=str, fill_value="",
                       dimension_names=("tile",), **checked_codecs(compress=True))
    spec, s = sch.features, sch.tile_size
    shards = sch.shard_tiles if sch.shard_tiles > 1 else None

    def tile_array(name: str, shape: tuple, dtype: str, dims: tuple, codecs: dict) -> None:
        # Float arrays are filled with NaN: written values are always finite, so a NaN
        # read back means a chunk is missing, never data.
        fill = float("nan") if dtype.startswith("float") else 0
        group.create_array(
            name, shape=(n, *shape), chunks=(1, *shape), dtype=dtype, fill_value=fill,
            shards=(shards, *shape) if shards else None, dimension_names=("tile", *dims), **codecs,
        )

    for t in spec.timesteps:
        for b in spec.blocks:
            tile_array(S.feature_path(t, b.name), b.shape, spec.dtype,
                       (f"c_{b.name}", f"h_{b.name}", f"w_{b.name}"), feature_codecs(spec.codec, spec.dtype))
    if sch.has_labels:
        tile_array(S.LABELS, (s, s), "uint8", ("row", "col"), checked_codecs(compress=True))
    if sch.store_instances:
        tile_array(S.INSTANCES, (s, s), "int32", ("row", "col"), checked_codecs(compress=True))
    if sch.store_rgb:
        tile_array(S.RGB, (3, s, s), "uint8", ("band", "row", "col"), checked_codecs(compress=True))
    if sch.ssl_dim:
        tile_array(S.SSL, (sch.ssl_dim,), "float32", ("ssl_dim",), checked_codecs())
    if sch.latent_shape:
        c, h, w = sch.latent_shape
        tile_array(S.LATENT, (c, h, w), "float32", ("c_latent", "h_latent", "w_latent"), checked_codecs())


def create_store(
    where: str | os.PathLike,
    schema: S.StoreSchema,
    tiles: Sequence[S.TileRecord] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreWriter:
    """Create a new store and return it open for writing (lock held)."""
    with write_errors(parse_location(where), "a new store"):
        return _create_store(where, schema, tiles, provenance, overwrite)


def _create_store(where, schema, tiles, provenance, overwrite) -> StoreWriter:
    loc = parse_location(where)
    tiles = list(tiles or [])
    if schema.n_tiles is not None and len(tiles) != schema.n_tiles:
        raise SchemaError(f"{loc}: schema declares {schema.n_tiles} tiles, {len(tiles)} records given")
    ids = [r.tile_id for r in tiles]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise SchemaError(f"{loc}: duplicate tile ids {dup}")
    if loc.kind == "zip":
        raise StoreReadOnlyError(f"{loc}: cannot create a store inside a zip; create a directory, then pack it")
    if loc.kind == "dir":
        _prepare_dir(loc, overwrite)
    lock = StoreLock(loc.local_dir) if loc.kind == "dir" else None
    if lock:
        lock.acquire()
    try:
        zstore = open_zarr_store(loc, read_only=False)
        n = len(tiles)
        attrs = {
            "schema_version": S.SCHEMA_VERSION,
            "complete": False,  # set once every array exists; an interrupted create is redone
            "identity": schema.identity,
            "identity_fields": schema.features.identity_fields(),
            "schema": schema.to_dict(),
            "provenance": {
                **(provenance or {}),
                "package_version": __version__,
                "zarr_version": zarr.__version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        # The group's first write already carries the attributes (complete: False), so an
        # interruption at any point leaves a store that a rerun recognises and redoes.
        group = zarr.open_group(zstore, mode="w" if loc.kind == "url" and overwrite else "a", zarr_format=3,
                                attributes={S.ATTR_KEY: attrs})
        group.attrs.put({S.ATTR_KEY: attrs})
        _create_arrays(group, schema, n)
        _write_table(group, 0, tiles)
        attrs["complete"] = True
        group.attrs.put({S.ATTR_KEY: attrs})
        return StoreWriter(loc, lock)
    except BaseException:
        if lock:
            lock.release()
        raise


def _prepare_dir(loc: Location, overwrite: bool) -> None:
    d = loc.local_dir
    if d.exists() and not d.is_dir():
        raise NotAStoreError(f"{loc}: exists and is a file, not a store directory")
    if d.exists() and any(p.name != S.LOCK_NAME for p in d.iterdir()):
        try:
            attrs = read_root_attrs(loc)
        except (NotAStoreError, FileNotFoundError):
            raise NotAStoreError(f"{loc}: exists and is not a pathsegdiff store; refusing to touch it") from None
        if attrs.get("complete") and not overwrite:
            raise StoreExistsError(f"{loc}: a store already exists; pass --overwrite to replace it")
    if d.exists():
        lock = StoreLock(d)
        lock.acquire()  # never delete a store another writer is filling
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)


def open_writer(where: str | os.PathLike, expect: S.FeatureSpec | None = None) -> StoreWriter:
    """Reopen an existing store to resume writing; refuses another identity."""
    loc = parse_location(where)
    if loc.kind == "zip":
        raise StoreReadOnlyError(f"{loc}: a packed .zip store is read-only")
    attrs = read_root_attrs(loc)
    if not attrs.get("complete"):
        raise NotAStoreError(f"{loc}: store creation was interrupted; recreate it with --overwrite")
    if expect is not None:
        have = S.FeatureSpec.from_dict(attrs["schema"]["features"])
        diff = S.identity_diff(have, expect)
        if diff:
            raise IdentityMismatchError(str(loc), diff)
    lock = StoreLock(loc.local_dir) if loc.kind == "dir" else None
    if lock:
        with write_errors(loc, "the writer lock"):
            lock.acquire()
    try:
        return StoreWriter(loc, lock)
    except BaseException:
        if lock:
            lock.release()
        raise


def open_or_create(
    where: str | os.PathLike,
    schema: S.StoreSchema,
    tiles: Sequence[S.TileRecord] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreWriter:
    """Resume the store at ``where`` if it matches ``schema`` and ``tiles``, else create it."""
    loc = parse_location(where)
    exists = False
    if not overwrite:
        try:
            exists = bool(read_root_attrs(loc).get("complete"))
        except (FileNotFoundError, NotAStoreError):
            exists = False
    if not exists:
        return create_store(where, schema, tiles, provenance, overwrite=overwrite or loc.kind == "dir")
    w = open_writer(where, expect=schema.features)
    try:
        if tiles is not None and w.schema.n_tiles is not None:
            have = list(w.tile_ids())
            want = [r.tile_id for r in tiles]
            if have != want:
                raise SchemaError(
                    f"{loc}: the store holds a different tile list ({len(have)} tiles) than this source "
                    f"({len(want)} tiles); use another output or --overwrite"
                )
        return w
    except BaseException:
        w.close()
        raise
