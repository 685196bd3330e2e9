"""Whole-tile chunks written and read off zarr's event loop: the store's fast path.

Every tile array has one chunk per tile.  For arrays whose codecs are
``bytes`` (little-endian), an optional ``blosc`` and ``crc32c`` (every array
the store creates, except BitRound features and sharded arrays),
:class:`ChunkCodec` makes exactly zarr's bytes (tests/store/
test_concurrent_io.py compares them) in any thread, with the GIL released
for the checksum, blosc and file I/O.  zarr itself runs its codecs on its one
event-loop thread, copies every chunk to append the checksum, and hops to a
thread for every object it writes or reads: a profile of the writer found
those, not the disk, setting its pace.

- :func:`write_chunks`: a batch's chunks are checksummed and written as files
  (the data and its 4-byte checksum in two writes, no copy; temporary file
  and rename, as zarr's LocalStore does) on a per-process pool, one chunk per
  task; a remote store gets them through ``store.set``; arrays the codec does
  not know go through zarr's ``setitem`` at the same time.  All settle
  before the first failure is raised.
- :func:`read_elements`: a local directory's chunk files are read straight
  into fresh buffers, as ``np.load`` does, and checked against their crc32c.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import crc32c
import numcodecs
import numpy as np
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

from pathsegdiff.store.backend.zarr_compat import chunk_key, default_buffer_prototype, sync

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class ChunkCodec:
    """Encode and decode one chunk of an unsharded array exactly as zarr does, in any thread.

    :meth:`for_array` says None for an array whose codecs it does not know
    (BitRound, shards): those keep zarr's own path.  ``whole_tiles``: the
    array has one chunk per tile (the writer's fast path takes only those).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, blosc: Any = None, whole_tiles: bool = False):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)  # the chunk's shape, the tile axis first
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.whole_tiles = whole_tiles
        self._blosc = blosc  # numcodecs.Blosc configured as zarr's BloscCodec, or None

    @classmethod
    def for_array(cls, arr: Any) -> ChunkCodec | None:
        """The codec of ``arr`` (a ``zarr.Array``) if it is a codec chain this class knows, else None."""
        codecs, chunks = tuple(arr.metadata.codecs), tuple(arr.chunks)
        if getattr(arr, "shards", None):
            return None
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "biuf" or sys.byteorder != "little" or dtype.byteorder == ">":
            return None
        if len(codecs) not in (2, 3) or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[-1], Crc32cCodec):
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        blosc = None
        if len(codecs) == 3:
            b = codecs[1]
            if not isinstance(b, BloscCodec):
                return None
            kw = dict(cname=b.cname.value, clevel=b.clevel, shuffle=_SHUFFLE[b.shuffle.value], blocksize=b.blocksize)
            try:  # zarr passes typesize from numcodecs 0.16 on, which first took it
                blosc = numcodecs.Blosc(**kw, typesize=b.typesize)
            except TypeError:
                blosc = numcodecs.Blosc(**kw)
        return cls(chunks, dtype, blosc, whole_tiles=chunks[0] == 1 and chunks[1:] == tuple(arr.shape[1:]))

    def encode(self, tile: np.ndarray) -> list[Any]:
        """One chunk's values (``shape``, or one tile of it) -> its bytes as parts: the data, then its crc32c."""
        tile = np.ascontiguousarray(tile, dtype=self.dtype)
        body = memoryview(tile).cast("B") if self._blosc is None else self._blosc.encode(tile)
        return [body, np.array([crc32c.crc32c(body)], "<u4").tobytes()]

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """The chunk's bytes (uint8, writable) -> its values; ValueError for a bad checksum or length (as zarr)."""
        if len(raw) < 4:
            raise ValueError(f"chunk of {len(raw)} bytes is too short for its checksum")
        body = raw[:-4]
        stored = int(raw[-4:].view("<u4")[0])
        if crc32c.crc32c(body) != stored:
            raise ValueError("Stored and computed checksum do not match")
        if self._blosc is None:
            if len(body) != self.nbytes:
                raise ValueError(f"chunk holds {len(body)} bytes, expected {self.nbytes}")
            return body.view(self.dtype).reshape(self.shape)
        # the blosc header (16 bytes): uncompressed size at bytes 4-7, compressed size at 12-15, little-endian
        sizes = np.frombuffer(body[:16].tobytes(), "<u4") if len(body) >= 16 else np.zeros(4, np.uint32)
        if sizes[1] != self.nbytes or sizes[3] != len(body):
            raise ValueError(f"chunk header says {sizes[1]} bytes in {sizes[3]}, expected {self.nbytes} in {len(body)}")
        out = np.empty(self.shape, self.dtype)
        self._blosc.decode(body, out=out)
        return out

    def read_file(self, path: str | os.PathLike) -> np.ndarray:
        """Read and decode one chunk file (one read into a fresh buffer, as ``np.load`` does)."""
        with open(path, "rb", buffering=0) as f:
            if self._blosc is None:
                raw = np.empty(self.nbytes + 5, np.uint8)  # one byte more than expected: a longer file is damage
                n = f.readinto(raw)
                while 0 < n < len(raw) and (more := f.readinto(memoryview(raw)[n:])):
                    n += more
                raw = raw[:n]
            else:
                raw = np.frombuffer(bytearray(f.read()), np.uint8)
        return self.decode(raw)


ChunkJob = tuple[str, ChunkCodec, np.ndarray]  # (store key, codec, one tile)


def write_chunks(store: Any, root: str | os.PathLike | None, direct: Sequence[ChunkJob],
                 pipeline: Sequence[Callable[[], Awaitable]] = ()) -> dict[str, float]:
    """Write every chunk of a batch concurrently; raise the first failure once all have settled.

    ``root``: the store's local directory (chunks become files written on
    the pool), or None (``store.set``, e.g. an object store).  ``pipeline``:
    zarr ``setitem`` calls for arrays :class:`ChunkCodec` does not know.
    Returns seconds spent checksumming and encoding, and writing, summed over
    the chunks (they overlap, so the sums may exceed the wall time).
    """
    spent = {"encode": 0.0, "io": 0.0}
    errors: list[BaseException] = []

    def put(key: str, codec: ChunkCodec, tile: np.ndarray) -> None:
        t0 = time.perf_counter()
        parts = codec.encode(tile)
        t1 = time.perf_counter()
        put_file(os.path.join(root, key), parts)
        spent["encode"] += t1 - t0  # a float += under the GIL: a lost update costs a timing, never data
        spent["io"] += time.perf_counter() - t1

    async def through_zarr() -> None:
        async def via_set(key: str, codec: ChunkCodec, tile: np.ndarray) -> None:
            parts = await asyncio.to_thread(codec.encode, tile)
            await store.set(key, default_buffer_prototype().buffer.from_bytes(b"".join(parts)))

        done = await asyncio.gather(*(via_set(*job) for job in (direct if root is None else ())),
                                    *(call() for call in pipeline), return_exceptions=True)
        errors.extend(r for r in done if isinstance(r, BaseException))

    futures = [_pool().submit(put, *job) for job in direct] if root is not None else []
    try:
        if pipeline or root is None:
            sync(through_zarr())
    finally:
        wait(futures)  # none left running, whatever happened here
    errors += [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return spent


def put_file(path: str, parts: Sequence[Any]) -> None:
    """Write ``parts`` to ``path`` atomically: a temporary file beside it, renamed into place (zarr's way)."""
    tmp = f"{path}.{uuid.uuid4().hex}.partial"  # the name partial.py removes after a crash
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:  # a write may stop short (a file-size limit, a signal): go on or fail
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_pools: dict[int, ThreadPoolExecutor] = {}
POOL_THREADS = min(8, os.cpu_count() or 1)  # chunk reads and writes at once, per process
PARALLEL_READ_BYTES = 1 << 20  # a tile at least this big is read on the pool, one thread per array


def read_elements(root: str | os.PathLike, arrays: Sequence[tuple[Any, ChunkCodec | None]], i: int
                  ) -> list[np.ndarray] | None:
    """Element ``i`` (a tile, or a status value) of each ``(zarr.Array, codec)`` of a local store at ``root``.

    None when an array has no codec or a chunk is missing or damaged: zarr's
    path must answer then, and its error names the array.  Big tiles are read
    on a per-process pool (fork-safe), one thread per array.
    """
    jobs = []
    for arr, codec in arrays:
        if codec is None:
            return None
        chunk = codec.shape[0]
        key = chunk_key(arr, (i // chunk, *(0,) * (len(codec.shape) - 1)))
        jobs.append((os.path.join(root, key), codec, i % chunk))
    try:
        if len(jobs) < 2 or sum(codec.nbytes for _, codec, _ in jobs) < PARALLEL_READ_BYTES:
            chunks = [codec.read_file(path) for path, codec, _ in jobs]
        else:
            chunks = list(_pool().map(lambda job: job[1].read_file(job[0]), jobs))
    except PermissionError:
        raise
    except (ValueError, OSError, RuntimeError):  # missing (FileNotFoundError), truncated, bad checksum
        return None
    return [c[row] for c, (_, _, row) in zip(chunks, jobs)]


def _pool() -> ThreadPoolExecutor:
    pool = _pools.get(os.getpid())
    if pool is None:
        _pools.clear()  # a forked child must not use its parent's threads
        pool = _pools[os.getpid()] = ThreadPoolExecutor(POOL_THREADS, "pathsegdiff-chunks")
    return pool


def chunk_problems(store: Any, root: str | os.PathLike | None, keys: Sequence[str]) -> dict[str, str]:
    """Key -> what is wrong with that chunk object: missing, or its bytes fail their trailing crc32c.

    Checks the bytes without decoding them (no blosc, no strings): a whole tile table of a million tiles in a
    fraction of a second.  ``root``: the store's local directory (files read directly), else None (``store.get``,
    all keys at once).
    """
    if root is not None:
        def read(key: str) -> bytes | None:
            try:
                with open(os.path.join(root, key), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        blobs = [read(k) for k in keys]
    else:
        async def fetch() -> list:
            return await asyncio.gather(*(store.get(k, prototype=default_buffer_prototype()) for k in keys))
        blobs = [None if b is None else b.to_bytes() for b in sync(fetch())]
    out = {}
    for key, raw in zip(keys, blobs):
        if raw is None:
            out[key] = "missing"
        elif len(raw) < 4 or crc32c.crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            out[key] = "fails its checksum (damaged)"
    return out
