"""Create a feature store, or reopen one for writing (identity checked, lock taken, grown if asked).

schema.py names the arrays and their shapes; this module turns a
``StoreSchema`` into zarr arrays (codecs, chunks or shards along the tile
axis, fill values) and root metadata, and hands back a ``StoreWriter``.
Reopening with a longer tile list appends the new tiles (``grow.py``).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Sequence
from typing import Any

import zarr

from pathsegdiff import __version__
from pathsegdiff.errors import (
    IdentityMismatchError,
    NotAStoreError,
    SchemaError,
    StoreExistsError,
    StoreReadOnlyError,
)
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.codecs import create_array
from pathsegdiff.store.encoded import StoreEncoding, check_bases
from pathsegdiff.store.grow import begin_append, check_same_layout, finish_append, new_tiles, recover_interrupted_append
from pathsegdiff.store.backend.location import Location, open_zarr_store, parse_location
from pathsegdiff.store.backend.lock import StoreLock
from pathsegdiff.store.reader import FeatureStore, read_root_attrs
from pathsegdiff.store.tile_table import write_cohort_columns, write_table
from pathsegdiff.store.backend.write_errors import write_errors
from pathsegdiff.store.writer import StoreWriter


def _create_arrays(group: zarr.Group, sch: S.StoreSchema, n: int, bases: dict) -> None:
    """Every array of ``schema.store_arrays``; a PCA preset's bases are written now, never after."""
    check_bases(sch.features, bases)
    for spec in S.store_arrays(sch):
        arr = create_array(group, spec, n)
        if spec.kind == "basis":
            arr[...] = getattr(bases[(spec.timestep, spec.block)], spec.name.rpartition("/")[2])


def create_store(
    where: str | os.PathLike,
    schema: S.StoreSchema,
    tiles: Sequence[S.TileRecord] | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    bases: dict | None = None,
) -> StoreWriter:
    """Create a new store and return it open for writing (lock held).

    ``bases``: a PCA preset's basis per (timestep, block) (``encodings.fit_bases``), matching the schema's
    ``basis_sha256``; written now, never after.
    """
    with write_errors(parse_location(where), "a new store"):
        return _create_store(where, schema, tiles, provenance, overwrite, bases or {})


def _create_store(where, schema, tiles, provenance, overwrite, bases) -> StoreWriter:
    loc = parse_location(where)
    StoreEncoding(schema.features, bases)  # a PCA store without its bases is refused before anything is touched
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
        _create_arrays(group, schema, n, bases)
        write_table(group, 0, tiles)
        write_cohort_columns(group, 0, tiles)
        attrs["complete"] = True
        group.attrs.put({S.ATTR_KEY: attrs})
        return StoreWriter(loc, lock)
    except BaseException:
        if lock:
            lock.release()
        raise


def _refuse_foreign(loc: Location) -> None:
    """A store directory that also holds files no store writes is never deleted (--overwrite included)."""
    foreign = S.foreign_entries(p.name for p in loc.local_dir.iterdir())
    if foreign:
        raise NotAStoreError(f"{loc}: holds files that are not the store's ({', '.join(foreign[:3])}); "
                             "refusing to replace it: move them out or choose another output")


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
        _refuse_foreign(loc)
    if d.exists():
        lock = StoreLock(d)
        lock.acquire()  # never delete a store another writer is filling
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)


def _locked(loc: Location, expect: S.FeatureSpec | None) -> tuple[dict[str, Any], StoreLock | None]:
    """Root attributes of a complete store with the expected identity, and its lock, taken."""
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
    return attrs, lock


def open_writer(where: str | os.PathLike, expect: S.FeatureSpec | None = None) -> StoreWriter:
    """Reopen an existing store to resume writing; refuses another identity."""
    loc = parse_location(where)
    _, lock = _locked(loc, expect)
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
    bases: dict | None = None,
) -> StoreWriter:
    """Resume the store at ``where`` if it matches ``schema``, appending the tiles of ``tiles`` it lacks; else create it.

    The store's tiles must come first in ``tiles``, unchanged (``grow.new_tiles``).  ``bases``: for creating a
    PCA store; a store that exists keeps its own (the identity's ``basis_sha256`` says they are the same).
    """
    loc = parse_location(where)
    exists = False
    if not overwrite:
        try:
            exists = bool(read_root_attrs(loc).get("complete"))
        except (FileNotFoundError, NotAStoreError):
            exists = False
    if not exists:
        return create_store(where, schema, tiles, provenance, overwrite=overwrite or loc.kind == "dir", bases=bases)
    attrs, lock = _locked(loc, schema.features)
    try:
        check_same_layout(loc, S.StoreSchema.from_dict(attrs["schema"]), schema)
        with write_errors(loc, "the tile table"):
            recover_interrupted_append(loc)
            fs = FeatureStore(loc)
            n = fs.n_tiles
            new = new_tiles(fs, tiles) if tiles is not None else []
            if new:
                source = (provenance or {}).get("source") or {}
                # where the new tiles came from: a store can hold tiles of two sources (real and synthetic ones)
                note = {"command": (provenance or {}).get("command", ""),
                        **{k: source[k] for k in ("kind", "root") if k in source},
                        **({"origin": source.get("origin", "real")} if source else {})}
                begin_append(loc, n, new, note)
        w = StoreWriter(loc, lock)
    except BaseException:
        if lock:
            lock.release()
        raise
    try:
        if new:
            with write_errors(loc, "the appended tiles"):
                w.append_tiles(new)
                finish_append(loc)
        return w
    except BaseException:
        w.close()
        raise
