"""Growing a store: a larger source appends its new tiles; written tiles are never touched.

A store grows only at its end: the tiles it holds must come first in the new
source, with the same position, resolution and split (``job.align_to_store``
puts them there), and a store never drops a tile.  Appending resizes the
tile-axis arrays and writes the new rows of the tile table; the chunks of the
tiles already there are not rewritten, and their status stays written.

Tiles of another origin (synthetic tiles added to a store of real ones, or
the other way round) come from another source: the source that grows a store
lists them as the store's own records, never loaded (``plan.align_to_store``).

A fixed-size store (``n_tiles`` declared) becomes growable first.  The append
is journalled in the root attributes (``appending: {from, to}``): a writer
killed midway leaves the journal, and the next writer rolls every tile-axis
array back to ``from`` before it plans the append again.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import zarr

from pathsegdiff.errors import SchemaError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.codecs import create_array
from pathsegdiff.store.backend.location import Location, open_zarr_store
from pathsegdiff.store.reader import FeatureStore, read_root_attrs
from pathsegdiff.store.tile_table import write_cohort_columns

JOURNAL = "appending"
LAYOUT_FIELDS = ("class_names", "ignore_index", "store_instances")  # what the labels mean


def check_same_layout(loc: Location, have: S.StoreSchema, want: S.StoreSchema) -> None:
    """Refuse a source whose labels mean something else than the store's (the identity covers the features)."""
    diff = [f"{k}: store has {getattr(have, k)!r}, this source {getattr(want, k)!r}"
            for k in LAYOUT_FIELDS if getattr(have, k) != getattr(want, k)]
    if diff:
        raise SchemaError(f"{loc}: the store's labels differ from this source's ({'; '.join(diff)}); "
                          "write to a new store or pass --overwrite")


def _group(loc: Location) -> zarr.Group:
    return zarr.open_group(open_zarr_store(loc, read_only=False), mode="r+", zarr_format=3)


def _tile_arrays(group: zarr.Group) -> list[zarr.Array]:
    return [a for _, a in group.arrays() if (a.metadata.dimension_names or (None,))[0] == "tile"] + [
        a for _, sub in group.groups() for a in _tile_arrays(sub)]


def recover_interrupted_append(loc: Location) -> bool:
    """Undo an append a killed writer left half done; True if there was one."""
    attrs = read_root_attrs(loc)
    if JOURNAL not in attrs:
        return False
    group, n = _group(loc), int(attrs[JOURNAL]["from"])
    for arr in _tile_arrays(group):
        if arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    attrs = {k: v for k, v in attrs.items() if k != JOURNAL}
    group.attrs.put({S.ATTR_KEY: attrs})
    return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(float(a)) and math.isnan(float(b))) or math.isclose(float(a), float(b), rel_tol=1e-5)
    return str(a) == str(b)


def new_tiles(fs: FeatureStore, tiles: Sequence[S.TileRecord]) -> list[S.TileRecord]:
    """The records of ``tiles`` the store lacks; refuses a source that drops, moves or reorders the store's tiles."""
    table = fs.table()
    have = [str(t) for t in table["tile_id"]]
    source_ids = {r.tile_id for r in tiles}
    gone = [t for t in have if t not in source_ids]
    if gone:
        slides = sorted({str(s) for t, s in zip(have, table["slide_id"]) if t not in source_ids})
        raise SchemaError(
            f"{fs.location}: the store holds {len(gone)} tiles this source does not (slides {', '.join(slides[:5])}; "
            f"e.g. {gone[0]}): a store grows, it never drops tiles; give a source that includes the store's slides "
            "with the same tile size, stride, --mpp and --min-tissue, or pass --overwrite (generated tiles join a "
            "store of real ones with --origin synthetic)")
    if [r.tile_id for r in tiles[: len(have)]] != have:
        raise SchemaError(f"{fs.location}: this source lists the store's tiles in another order; "
                          "align it first (extract/run/job.align_to_store)")
    cols = ("slide_id", "x", "y", "mpp", "split", "origin") + (("patient",) if fs.has_array(S.column_path("patient"))
                                                               else ())
    for i, r in enumerate(tiles[: len(have)]):
        for col in cols:
            if not _same(getattr(r, col), table[col][i]):
                raise SchemaError(
                    f"{fs.location}: tile {r.tile_id} has {col} {table[col][i]!r} in the store but {getattr(r, col)!r} "
                    "in this source: written tiles do not change; write to a new store or pass --overwrite")
    return list(tiles[len(have):])


def begin_append(loc: Location, n: int, records: Sequence[S.TileRecord], note: dict[str, Any]) -> None:
    """Journal the append, make the store growable, and write the new rows' cohort columns."""
    attrs = read_root_attrs(loc)
    attrs["schema"] = {**attrs["schema"], "n_tiles": None}
    attrs[JOURNAL] = {"from": n, "to": n + len(records)}
    log = list(attrs["provenance"].get("appended", []))
    log.append({**note, "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "tiles": len(records), "slides": sorted({r.slide_id for r in records})})
    attrs["provenance"] = {**attrs["provenance"], "appended": log}
    group = _group(loc)
    group.attrs.put({S.ATTR_KEY: attrs})
    cohort = [a for a in S.store_arrays(S.StoreSchema.from_dict(attrs["schema"])) if a.kind == "column" and a.optional]
    lacking = [a for a in cohort if a.name not in group]
    if lacking:  # a store made before an optional column gains it, its rows the defaults (an old tile is real)
        chunk = group[S.column_path("tile_id")].chunks[0]
        for spec in lacking:
            create_array(group, replace(spec, chunk_tiles=chunk), n)
        write_cohort_columns(group, 0, [S.TileRecord("-")] * n, [a.name.rpartition("/")[2] for a in lacking])
    for spec in cohort:
        arr = group[spec.name]
        if arr.shape[0] != n + len(records):
            arr.resize((n + len(records),))
    write_cohort_columns(group, n, records)


def finish_append(loc: Location) -> None:
    attrs = read_root_attrs(loc)
    attrs.pop(JOURNAL, None)
    _group(loc).attrs.put({S.ATTR_KEY: attrs})


def record_skipped_slides(loc: Location, skipped: dict[str, str]) -> None:
    """Keep the slides the latest run left out (path -> reason) in the root attributes, for ``store info``."""
    attrs = read_root_attrs(loc)
    if attrs.get("skipped_slides", {}) != skipped:
        _group(loc).attrs.put({S.ATTR_KEY: {**attrs, "skipped_slides": dict(skipped)}})
