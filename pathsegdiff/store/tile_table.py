"""The tile table: one row per tile (``tiles/*``, ``schema.store_arrays``' columns) and its status.

``TableReads`` gives ``FeatureStore`` (reader.py) its table reads: the whole
table or a few columns (a big store's ``store info`` and ``store ls`` read
only what they show), status, records.  The optional columns (patient,
pyramid level, annotated fraction, origin) were added later: a store made
before them has none and reads as their defaults (``schema.COHORT_COLUMNS``:
an old store's tiles are real).  :func:`write_table` and
:func:`write_cohort_columns` write rows when a store is created or grows;
every chunk is written, fill values included, so a missing one is damage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from pathsegdiff.errors import CorruptStoreError, SchemaError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.zarr_compat import chunk_key
from pathsegdiff.store.backend.chunk_io import chunk_problems
from pathsegdiff.store.missing import check_present

EVERY_CHUNK = {"write_empty_chunks": True}


def _column_dtype(spec: S.ArraySpec) -> Any:
    return object if spec.dtype == "str" else spec.dtype


def table_columns(sch: S.StoreSchema) -> dict[str, S.ArraySpec]:
    """Column name (``tile_id``, ..., ``patient``) -> its array."""
    return {a.name.rpartition("/")[2]: a for a in S.store_arrays(sch) if a.kind == "column"}


class TableReads:
    """What ``FeatureStore`` reads of the tile table."""

    def status(self) -> np.ndarray:
        """(n_tiles,) uint8: ``schema.STATUS_NAMES``."""
        return np.asarray(self.read_array(S.STATUS, slice(None)), dtype=np.uint8)

    def written(self) -> np.ndarray:
        """Indices of tiles whose data is complete (status written)."""
        return np.flatnonzero(self.status() == S.STATUS_WRITTEN)

    def tile_ids(self, idx: np.ndarray | None = None) -> np.ndarray:
        ids = self.__dict__.get("_tile_ids")
        if ids is None or len(ids) != self.n_tiles:
            ids = self.__dict__["_tile_ids"] = self.table(["tile_id"])["tile_id"]
        return ids if idx is None else ids[idx]

    def table(self, columns: Sequence[str] | None = None, rows: slice | np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
        """The tile table: every column (``tile_id``, ``slide_id``, ``x``, ``y``, ``mpp``, ``split``, ``patient``,
        ``level``, ``annotated``, ``origin``) and ``status``; ``columns``: only those, read alone; ``rows``: only those rows
        (a slice or indices), read from the chunks that hold them."""
        specs = table_columns(self.schema)
        sel = slice(None) if rows is None else rows
        out = {}
        for name in list(specs) + ["status"] if columns is None else columns:
            if name == "status":
                out[name] = self.status()[sel]
            elif name not in specs:
                raise SchemaError(f"{self.location}: the tile table has no column {name!r}; "
                                  f"it has {', '.join([*specs, 'status'])}")
            elif specs[name].optional and not self.has_array(specs[name].name):  # a store made before the column
                count = len(np.arange(self.n_tiles)[sel])
                out[name] = np.full(count, S.COHORT_COLUMNS[name][1], dtype=_column_dtype(specs[name]))
            else:
                out[name] = np.asarray(self.read_array(specs[name].name, sel), dtype=_column_dtype(specs[name]))
        return out

    def record(self, i: int) -> S.TileRecord:
        """Row ``i`` of the tile table."""
        table = self.__dict__.get("_table")
        if table is None or len(table["tile_id"]) != self.n_tiles:  # the table only grows: valid until it does
            table = self.__dict__["_table"] = self.table(list(table_columns(self.schema)))
        row = {c: v[int(i)] for c, v in table.items()}
        # NaN (no annotations) stays the field's default, so records compare equal as NaN never does
        annotated = {} if np.isnan(row["annotated"]) else {"annotated": float(row["annotated"])}
        return S.TileRecord(tile_id=str(row["tile_id"]), slide_id=str(row["slide_id"]), x=int(row["x"]),
                            y=int(row["y"]), mpp=float(row["mpp"]), split=str(row["split"]),
                            patient=str(row["patient"]), level=int(row["level"]), origin=origin_of(row["origin"]),
                            **annotated)

    def records(self) -> list[S.TileRecord]:
        """Every row of the tile table, cohort columns included."""
        return [self.record(i) for i in range(self.n_tiles)]

    def slide_runs(self) -> list[list] | None:
        """The table's slide, patient and split as runs ([slide_id, patient, split, start, stop, annotated sum,
        annotated count], schema.RUNS_ATTR), cut at the store's length; None for a store without them."""
        runs = self.group()[S.TILES_GROUP].attrs.get(S.RUNS_ATTR) if self.has_array(S.TILES_GROUP) else None
        return None if runs is None else clip_runs(runs, self.n_tiles)

    def check_table(self) -> None:
        """Raise CorruptStoreError naming the first tile-table or status chunk that is missing or fails its
        checksum (the writer writes every one of them); reads their bytes, decodes nothing."""
        names = [a.name for a in S.store_arrays(self.schema) if a.kind in ("column", "status")
                 and (not a.optional or self.has_array(a.name))]
        keys = {chunk_key(arr, (c,)): name for name in names
                for arr in [self.array(name)] for c in range(-(-arr.shape[0] // arr.chunks[0]))}
        root = str(self.location.local_dir) if self.location.kind == "dir" else None
        for key, problem in chunk_problems(self.zarr_store, root, list(keys)).items():
            if problem == "missing":
                check_present(self)
            raise CorruptStoreError(f"{self.location}: {keys[key]} chunk {key.rsplit('/', 1)[1]} {problem} "
                                    "(tile table damaged); run 'pathsegdiff store verify'")

    def fail_reasons(self) -> dict[str, str]:
        """Tile id -> why it failed, for every failed tile."""
        bad = np.flatnonzero(self.status() == S.STATUS_FAILED)
        reasons = self.read_array(S.FAIL_REASON, slice(None))
        ids = self.tile_ids()
        return {str(ids[i]): str(reasons[i]) for i in bad}


def origin_of(value: Any) -> str:
    """A stored origin as a record holds it: ``synthetic``, else ``real``."""
    return "synthetic" if str(value) == "synthetic" else "real"


def is_synthetic(table: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) bool: which rows of a tile table are synthetic tiles (a table without the column: none)."""
    origin = table.get("origin")
    if origin is None:
        return np.zeros(len(next(iter(table.values()))), bool)
    return np.asarray(origin).astype(str) == "synthetic"


def full_table(fs) -> dict[str, np.ndarray]:
    """``fs.table()``: kept for callers outside store/ that still import it; use ``FeatureStore.table``."""
    return fs.table()


def _write_columns(group: zarr.Group, start: int, records: Sequence[S.TileRecord], columns: dict[str, str]) -> None:
    stop = start + len(records)
    for name, dtype in columns.items():
        values = np.asarray([getattr(r, name) for r in records], dtype=object if dtype == "str" else dtype)
        group[S.column_path(name)].with_config(EVERY_CHUNK)[start:stop] = values


def write_table(group: zarr.Group, start: int, records: Sequence[S.TileRecord]) -> None:
    """Rows ``start..start+len(records)`` of the first columns, their status (todo), and the runs."""
    if records:
        _write_columns(group, start, records, S.TILE_COLUMNS)
        group[S.STATUS].with_config(EVERY_CHUNK)[start : start + len(records)] = np.zeros(len(records), np.uint8)
        _write_runs(group, start, records)


def clip_runs(runs: list[list], n: int) -> list[list]:
    """``runs`` cut at tile ``n`` (an append that a killed writer left half done is undone to ``n``)."""
    # Runs begin where each write of rows began, and a store shrinks only back to such a start: a cut falls between
    # runs (a run cut inside would keep the annotated sums of tiles it no longer holds).
    out = [list(r) for r in runs if r[3] < n]
    if out and out[-1][4] > n:
        out[-1][4] = n
    return out


def runs_of(records: Sequence[S.TileRecord], start: int) -> list[list]:
    """[slide_id, patient, split, start, stop, annotated sum, annotated count] for consecutive records that share
    slide, patient and split."""
    out: list[list] = []
    for i, r in enumerate(records, start):
        if not out or out[-1][4] != i or out[-1][:3] != [r.slide_id, r.patient, r.split]:
            out.append([r.slide_id, r.patient, r.split, i, i, 0.0, 0])
        run = out[-1]
        run[4] = i + 1
        if r.annotated == r.annotated:  # not NaN
            run[5], run[6] = run[5] + float(r.annotated), run[6] + 1
    return out


def _write_runs(group: zarr.Group, start: int, records: Sequence[S.TileRecord]) -> None:
    tiles = group[S.TILES_GROUP]
    have = tiles.attrs.get(S.RUNS_ATTR)
    if have is None and start > 0:
        return  # a store made before the runs (or with too many): store info reads the columns
    runs = clip_runs(have or [], start) + runs_of(records, start)
    tiles.attrs[S.RUNS_ATTR] = runs if len(runs) <= S.MAX_RUNS else None


def write_cohort_columns(group: zarr.Group, start: int, records: Sequence[S.TileRecord],
                         names: Sequence[str] | None = None) -> None:
    """Rows ``start..start+len(records)`` of the optional columns (patient, level, annotated, origin), or of
    ``names`` only."""
    if records:
        _write_columns(group, start, records, {name: dtype for name, (dtype, _) in S.COHORT_COLUMNS.items()
                                               if names is None or name in names})
