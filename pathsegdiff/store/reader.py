"""Open a store for reading: tiles, selections of blocks and timesteps, dask and xarray views.

A :class:`FeatureStore` keeps only its location when pickled and opens zarr
lazily, so it can be handed to DataLoader workers under fork or spawn: each
worker opens its own handles on first use.

Single-tile reads from a local directory read the chunk files straight into
fresh buffers, checksum included (``chunk_io.py``), as ``np.load`` would; a
missing or damaged chunk, zips, URLs, shards and BitRound go through zarr.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pathsegdiff.errors import CorruptStoreError, NotAStoreError, PathsegdiffError, SchemaError
from pathsegdiff.errors import StoreAccessError, TileNotWrittenError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.chunk_io import ChunkCodec, read_elements
from pathsegdiff.store.backend.listing import present_chunks
from pathsegdiff.store.backend.zarr_compat import getitem, sync
from pathsegdiff.store.encoded import EncodedReads
from pathsegdiff.store.backend.location import Location, parse_location, redact
from pathsegdiff.store.missing import check_missing, check_present
from pathsegdiff.store.backend.root import open_group as _open_group
from pathsegdiff.store.backend.root import read_root_attrs  # also imported from here by create.py and others
from pathsegdiff.store.tile_table import TableReads


@dataclass
class TileData:
    """One tile read back: ``features[t][block]`` is (C, h, w)."""

    index: int
    record: S.TileRecord
    features: dict[int, dict[str, np.ndarray]]
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    rgb: np.ndarray | None = None
    ssl: np.ndarray | None = None
    latent: np.ndarray | None = None


class FeatureStore(TableReads, EncodedReads):
    """A store opened for reading.  Reading is always allowed, even while a writer runs; ``read_features``,
    ``read_coefficients`` and the ``encoding`` (compact stores decoded) come from ``encoded.py``, the tile
    table (``table``, ``status``, ``written``, ``record``) from ``tile_table.py``.

    ``direct_io = False`` (on the class or one store) sends every chunk
    through zarr's own codec pipeline, reads and writes: what the store did
    before ``chunk_io.py``; benchmarks compare the two.
    """

    direct_io = True

    def __init__(self, loc: Location, writable: bool = False):
        self.location = loc
        self._writable = writable
        meta = read_root_attrs(loc)
        if not meta.get("complete"):
            raise NotAStoreError(f"{loc}: store creation was interrupted; recreate it with --overwrite")
        self.meta = meta
        self.schema = S.StoreSchema.from_dict(meta["schema"])
        self._g: zarr.Group | None = None
        self._pid = os.getpid()
        self._arrays: dict[str, zarr.Array] = {}
        self._codecs: dict[str, ChunkCodec | None] = {}
        self._tile_ids: np.ndarray | None = None  # tile_table.py's caches
        self._table: dict[str, np.ndarray] | None = None

    # -- pickling: keep the location only, reopen lazily in the new process --
    def __getstate__(self) -> dict:
        return {"location": self.location, "meta": self.meta, "schema": self.schema}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._writable, self._g, self._arrays, self._tile_ids, self._table = False, None, {}, None, None
        self._codecs = {}
        self._pid = os.getpid()

    def group(self) -> zarr.Group:
        if self._g is None or self._pid != os.getpid():
            # A forked child must not share the parent's open file (a zip's seek
            # position) or connection pool: reopen in every new process.
            self._arrays.clear()
            self._codecs.clear()
            self._g = _open_group(self.location, read_only=not self._writable)
            self._pid = os.getpid()
        return self._g

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays or self._pid != os.getpid():
            self.group()
            try:
                arr = self.group()[name]
                # zarr skips chunks equal to the fill value by default; a store must hold
                # every chunk of a written tile, so that a missing one means damage.
                self._arrays[name] = arr.with_config({"write_empty_chunks": True}) if self._writable else arr
            except KeyError:
                check_present(self)
                raise SchemaError(f"{self.location}: no array {name!r} in this store") from None
            except (json.JSONDecodeError, ValueError) as e:
                raise CorruptStoreError(f"{self.location}: damaged metadata of {name}: {e}") from None
        return self._arrays[name]

    def _invalidate(self) -> None:
        self._arrays.clear()
        self._codecs.clear()
        self._tile_ids = self._table = None

    # -- description --------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.meta["identity"]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.meta["provenance"]

    @property
    def n_tiles(self) -> int:
        return int(self.array(S.STATUS).shape[0])

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.schema.features.blocks)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.schema.features.timesteps

    def has_array(self, name: str) -> bool:
        """Whether the store holds the array ``name`` (a store made before an optional array lacks it)."""
        if name in self._arrays and self._pid == os.getpid():
            return True
        return name in self.group()

    @property
    def zarr_store(self) -> Any:
        """The zarr ``Store`` the group lives in (for byte-level work: copy, manifests, chunk listings)."""
        return self.group().store

    def object_exists(self, key: str) -> bool:
        """Whether the store holds the object ``key`` (``zarr.json``, a chunk key)."""
        return bool(sync(self.zarr_store.exists(key)))

    def present_chunks(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Array -> bool mask over its chunks along the tile axis: which exist, from one listing of the store."""
        arrays = {n: self.array(n) for n in names}
        return present_chunks(self.zarr_store, self.location.local_dir if self.location.kind == "dir" else None,
                              arrays)

    # -- data -----------------------------------------------------------------
    def check_selection(self, blocks: Any, timesteps: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
        blocks = tuple(blocks) if blocks else self.blocks
        timesteps = tuple(int(t) for t in timesteps) if timesteps else self.timesteps
        for b in blocks:
            if b not in self.blocks:
                raise SchemaError(f"{self.location}: no block {b!r}; the store has {', '.join(self.blocks)}")
        for t in timesteps:
            if t not in self.timesteps:
                raise SchemaError(
                    f"{self.location}: no timestep {t}; the store has {', '.join(map(str, self.timesteps))}"
                )
        return blocks, timesteps

    def _read_direct(self, names: list[str], i: int) -> list[np.ndarray] | None:
        """Element ``i`` of each of ``names`` from a local directory's chunk files; None: zarr's path answers."""
        if self.location.kind != "dir" or not self.direct_io or not 0 <= i < self.n_tiles:
            return None
        try:
            return read_elements(self.location.local_dir, [(self.array(n), self._codec(n)) for n in names], i)
        except PermissionError as e:
            raise StoreAccessError(f"{self.location}: access denied reading {names} ({redact(e)})") from None

    def _codec(self, name: str) -> ChunkCodec | None:
        """How to encode/decode ``name``'s chunks off zarr's event loop; None: through zarr."""
        if name not in self._codecs or self._pid != os.getpid():
            self._codecs[name] = ChunkCodec.for_array(self.array(name)) if self.direct_io else None
        return self._codecs[name]

    def read_array(self, name: str, sel: Any) -> np.ndarray:
        if isinstance(sel, (int, np.integer)) and (got := self._read_direct([name], int(sel))) is not None:
            check_missing(self, name, sel, got[0])
            return got[0]
        try:
            data = np.asarray(self.array(name)[sel])
        except PathsegdiffError:
            raise
        except PermissionError as e:
            raise StoreAccessError(f"{self.location}: access denied reading {name} ({redact(e)})") from None
        except (ValueError, OSError, RuntimeError) as e:
            # crc32c mismatch, truncated chunk or undecodable bytes
            raise CorruptStoreError(f"{self.location}: cannot read {name}[{sel}]: {redact(e)}") from None
        check_missing(self, name, sel, data)
        return data

    def read_labels(self, idx: Any) -> np.ndarray:
        return self._read_extra(S.LABELS, self.schema.has_labels, "labels", idx)

    def read_instances(self, idx: Any) -> np.ndarray:
        return self._read_extra(S.INSTANCES, self.schema.store_instances, "instance ids", idx)

    def read_rgb(self, idx: Any) -> np.ndarray:
        return self._read_extra(S.RGB, self.schema.store_rgb, "RGB tiles", idx)

    def _read_extra(self, name: str, stored: bool, what: str, idx: Any) -> np.ndarray:
        if not stored:
            raise SchemaError(f"{self.location}: this store holds no {what}")
        return self.read_array(name, idx)

    def read_tile(self, i: int, blocks: Any = None, timesteps: Any = None, extras: bool = True,
                  coefficients: bool = False) -> TileData:
        """All selected arrays of tile ``i``; raises if the tile is not written.  ``coefficients``: a PCA store's
        float32 coefficients (K, h, w) as the features, not projected back (``read_coefficients``)."""
        i = int(i)
        if not 0 <= i < self.n_tiles:
            raise SchemaError(f"{self.location}: tile index {i} out of range 0..{self.n_tiles - 1}")
        st = int(self.read_array(S.STATUS, i))
        if st != S.STATUS_WRITTEN:
            check_present(self)
            self.status()  # raises if the status chunk itself is missing
            raise TileNotWrittenError(
                f"{self.location}: tile {i} ({self.tile_ids()[i]}) is {S.STATUS_NAMES.get(st, st)}, not written"
            )
        blocks, timesteps = self.check_selection(blocks, timesteps)
        if coefficients and not self.encoding.encoding.uses_pca:
            raise SchemaError(f"{self.location}: a {self.encoding.encoding.name} store holds no PCA coefficients")
        names = [n for t in timesteps for b in blocks for n in self.encoding.stored_arrays(t, b)]
        beside = {a.kind: a.name for a in S.data_arrays(self.schema) if a.kind in S.EXTRA_KINDS} if extras else {}
        names += list(beside.values())
        got = dict(zip(names, self.read_arrays(names, i)))
        feats = {t: {b: self.decoded(got, t, b, coefficients) for b in blocks} for t in timesteps}
        return TileData(i, self.record(i), feats, **{kind: got[name] for kind, name in beside.items()})

    def read_arrays(self, names: Sequence[str], i: int) -> list[np.ndarray]:
        """One tile of several arrays: straight from the chunk files, else fetched concurrently through zarr."""
        out = self._read_direct(names, i)
        if out is None:
            arrays = [self.array(n) for n in names]

            async def fetch():
                return await asyncio.gather(*(getitem(a, i) for a in arrays))

            try:
                out = [np.asarray(x) for x in sync(fetch())]
            except Exception:
                out = [self.read_array(n, i) for n in names]  # one by one, to name the damaged array
        for name, x in zip(names, out):
            check_missing(self, name, i, x)
        return out

    # -- views (views.py) -----------------------------------------------------
    def to_dask(self, name: str):
        """A dask array over one stored array (e.g. ``features/t50/up1``), one dask chunk per tile."""
        from pathsegdiff.store.views import dask_array

        return dask_array(self, name)

    def to_xarray(self, blocks: Any = None, timesteps: Any = None):
        """An ``xarray.Dataset`` of dask-backed variables named ``t50/up1``, ``labels``, ``rgb``..."""
        from pathsegdiff.store.views import xarray_dataset

        return xarray_dataset(self, blocks, timesteps)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.location)!r}, tiles={self.n_tiles}, identity={self.identity})"


def open_store(where: str | os.PathLike) -> FeatureStore:
    """Open a store read-only: a directory, a ``.zip`` made by ``pack``, or an fsspec URL."""
    return FeatureStore(parse_location(where))
