"""Every zarr API the store uses that zarr does not promise to keep, in one place.

zarr 3.1 (Python 3.11) and 3.2+ (3.12+) must both work.  The store needs a
few things zarr keeps outside its documented surface: running a coroutine on
zarr's own event loop (``sync``), an array's async face (to fetch several
arrays' chunks at once), the chunk key of a chunk, and the byte buffers a
zarr ``Store`` takes.  Each is looked up here, once, trying the places zarr
has kept it; when an upgrade moves one, importing this module fails with
:class:`ZarrMovedError` naming what moved and where it was looked for
(``tests/store/test_zarr_compat.py`` imports it, so the suite fails loudly
rather than a store call deep inside a run).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Coroutine
from typing import Any

import numpy as np
import zarr


class ZarrMovedError(ImportError):
    """A zarr API the store relies on is not where any known zarr version kept it."""


def find_api(what: str, places: list[tuple[str, str]]) -> Any:
    """The first of ``places`` ((module, attribute) pairs) that exists; else ZarrMovedError naming them all."""
    for module, attr in places:
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        return found
    tried = ", ".join(f"{m}.{a}" for m, a in places)
    raise ZarrMovedError(f"zarr {zarr.__version__} moved {what} (looked for {tried}); "
                         "update pathsegdiff/store/backend/zarr_compat.py")


# Runs a coroutine on zarr's event-loop thread and waits for it (zarr.core.sync.sync since 3.0).
_sync = find_api("its event-loop runner 'sync'", [("zarr.core.sync", "sync")])
# The prototype and CPU buffer a Store's get/set take (public under zarr.buffer since 3.0).
default_buffer_prototype = find_api("'default_buffer_prototype'", [("zarr.buffer", "default_buffer_prototype"),
                                                                 ("zarr.core.buffer", "default_buffer_prototype")])
CpuBuffer = find_api("the CPU 'Buffer'", [("zarr.buffer.cpu", "Buffer"), ("zarr.core.buffer.cpu", "Buffer")])
# A store that hands every call on to another (public since 3.0).
WrapperStore = find_api("'WrapperStore'", [("zarr.storage", "WrapperStore"), ("zarr.storage._wrapper", "WrapperStore")])


def sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on zarr's event loop (where its stores' async calls must run) and return its result."""
    return _sync(coro)


def _async_face(arr: zarr.Array) -> Any:
    """``arr``'s ``AsyncArray``: the public ``async_array`` (3.1+, deprecated later), else the attribute it wraps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        face = getattr(arr, "async_array", None)
    if face is None:
        face = getattr(arr, "_async_array", None)
    if face is None:
        raise ZarrMovedError(f"zarr {zarr.__version__}: zarr.Array has neither getitem_async nor async_array; "
                             "update pathsegdiff/store/backend/zarr_compat.py")
    return face


async def getitem(arr: zarr.Array, selection: Any) -> Any:
    """``arr[selection]`` as a coroutine, so several arrays' chunks are fetched concurrently."""
    if (method := getattr(arr, "getitem_async", None)) is not None:
        return await method(selection)
    return await _async_face(arr).getitem(selection)


async def setitem(arr: zarr.Array, selection: Any, value: np.ndarray) -> None:
    """``arr[selection] = value`` as a coroutine (zarr's own codec pipeline: BitRound, shards)."""
    if (method := getattr(arr, "setitem_async", None)) is not None:
        await method(selection, value)
        return
    await _async_face(arr).setitem(selection, value)


def chunk_key(arr: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of chunk ``coords`` of ``arr``: ``features/t50/up1/c.17.0.0.0`` (the array's own encoding)."""
    return f"{arr.path}/{arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))}"


def chunk_separator(arr: zarr.Array) -> str:
    """The separator of ``arr``'s chunk keys: '.' (``c.17.0.0``) or '/' (``c/17/0/0``, stores before the '.' keys)."""
    return arr.metadata.encode_chunk_key((0,) * max(len(arr.shape), 1))[1]


def check() -> list[str]:
    """What the store needs of zarr, each named with where it was found (the compat test prints it)."""
    arr = zarr.create_array(zarr.storage.MemoryStore(), name="a", shape=(2, 3), chunks=(1, 3), dtype="uint8", fill_value=0,
                            chunk_key_encoding={"name": "default", "separator": "."})

    async def roundtrip() -> Any:
        await setitem(arr, slice(1, 2), np.full((1, 3), 7, np.uint8))
        return await getitem(arr, 1)

    got = sync(roundtrip())
    if not np.array_equal(np.asarray(got), [7, 7, 7]):
        raise ZarrMovedError(f"zarr {zarr.__version__}: an async write then read gave {got!r}")
    if chunk_key(arr, (1, 0)) != "a/c.1.0" or chunk_separator(arr) != ".":
        raise ZarrMovedError(f"zarr {zarr.__version__}: chunk keys read {chunk_key(arr, (1, 0))!r}")
    buf = CpuBuffer.from_bytes(b"abc")
    if buf.to_bytes() != b"abc" or default_buffer_prototype().buffer is None:
        raise ZarrMovedError(f"zarr {zarr.__version__}: buffers do not round-trip bytes")
    return [f"sync: {_sync.__module__}.{_sync.__name__}", f"buffer: {CpuBuffer.__module__}.{CpuBuffer.__name__}",
            f"wrapper store: {WrapperStore.__module__}.{WrapperStore.__name__}",
            f"async arrays: {'getitem_async' if hasattr(arr, 'getitem_async') else 'async_array'}"]
