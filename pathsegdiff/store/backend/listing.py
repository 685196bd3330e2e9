"""Which chunk objects of some arrays exist, from one pass over the store's objects.

zarr hands back an array's fill value for a chunk that does not exist, so
``verify`` looks for every written tile's chunks by key.  Asking object by
object costs a request (or a ``stat``) per tile and array; listing each
array's prefix costs a listing per array.  :func:`present_chunks` lists once:
a local directory's chunk files with one ``scandir`` per array directory (a
``.``-keyed array keeps its chunks side by side), any other store with one
``list()`` of its keys, and answers with a mask over the chunks (or shards)
along the tile axis.  Only keys of whole-tile chunks count (every other
coordinate 0), so zarr's temporary ``*.partial`` files never do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.store.backend.zarr_compat import chunk_separator, sync


def _objects_along_tiles(arr: Any) -> tuple[int, int]:
    """(tiles per object, objects) along the first axis: a shard is one object, else a chunk is."""
    per = (getattr(arr, "shards", None) or arr.chunks)[0]
    return per, -(-arr.shape[0] // per) if arr.shape[0] else 0


def _first_coordinate(rest: str, sep: str, ndim: int) -> int | None:
    """The first coordinate of a chunk key after its array path and ``c<sep>``; None: not a whole-tile chunk."""
    parts = rest.split(sep)
    if len(parts) != ndim or not all(p == "0" for p in parts[1:]) or not parts[0].isdigit():
        return None
    return int(parts[0])


def _local_coordinates(folder: Path, sep: str, ndim: int) -> list[int]:
    if sep == ".":
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in entries if e.name.startswith("c.")]
        except FileNotFoundError:
            return []
        return [c for n in names if (c := _first_coordinate(n[2:], ".", ndim)) is not None]
    found = []
    for root, _, files in os.walk(folder / "c"):
        rel = os.path.relpath(root, folder / "c")
        for f in files:
            key = f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}"
            if (c := _first_coordinate(key, "/", ndim)) is not None:
                found.append(c)
    return found


def _listed_coordinates(store: Any, arrays: Mapping[str, Any]) -> dict[str, list[int]]:
    prefixes = {f"{name}/c{chunk_separator(arr)}": name for name, arr in arrays.items()}
    found: dict[str, list[int]] = {name: [] for name in arrays}

    async def collect() -> list[str]:
        return [k async for k in store.list()]

    for key in sync(collect()):
        head, _, last = key.rpartition("/")
        # '.' keys: the array path, then c.<i>.0...; '/' keys: find the array path before one of the /c/
        candidates = [head + "/c."] if last.startswith("c.") else _slash_prefixes(key)
        for prefix in candidates:
            name = prefixes.get(prefix)
            if name is not None:
                arr = arrays[name]
                if (c := _first_coordinate(key[len(prefix):], prefix[-1], len(arr.shape))) is not None:
                    found[name].append(c)
                break
    return found


def _slash_prefixes(key: str) -> list[str]:
    """Every ``<path>/c/`` that ``key`` starts with (the array path is one of them)."""
    out, i = [], key.find("/c/")
    while i >= 0:
        out.append(key[: i + 3])
        i = key.find("/c/", i + 1)
    return out


def present_chunks(store: Any, local_dir: Path | None, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Array name -> (objects along the tile axis,) bools, True where that chunk (or shard) object exists.

    ``store``: the zarr store; ``local_dir``: its directory when it is one (read with ``scandir``), else None;
    ``arrays``: name -> ``zarr.Array``.
    """
    if local_dir is not None:
        coords = {name: _local_coordinates(Path(local_dir) / name, chunk_separator(arr), len(arr.shape))
                  for name, arr in arrays.items()}
    else:
        coords = _listed_coordinates(store, arrays)
    out = {}
    for name, arr in arrays.items():
        _, n = _objects_along_tiles(arr)
        mask = np.zeros(n, bool)
        idx = np.asarray([c for c in coords[name] if c < n], dtype=np.int64)
        mask[idx] = True
        out[name] = mask
    return out


def tiles_per_object(arr: Any) -> int:
    """Tiles in one chunk (or shard) object of ``arr``: tile ``i`` lives in object ``i // tiles_per_object``."""
    return _objects_along_tiles(arr)[0]
