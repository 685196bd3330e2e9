"""Check a store: every written tile's chunks exist, decode (crc32c), are finite and in range.

A compact store's int8 scale/offset arrays are checked like the features,
and its PCA bases must be whole, finite and match the identity's hash.

Problems are reported by tile id.  A missing chunk is looked for by key,
because zarr would otherwise hand back the fill value as if it were data.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from zarr.core.sync import sync

from pathsegdiff.errors import PathsegdiffError
from pathsegdiff.store import schema as S
from pathsegdiff.store.encodings import parse_preset
from pathsegdiff.store.reader import FeatureStore, open_store

READ_BATCH = 32  # tiles read together; zarr fetches their chunks concurrently


@dataclass
class VerifyReport:
    """What ``verify_store`` found.  ``ok`` only when nothing is wrong."""

    location: str
    n_tiles: int = 0
    n_checked: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # status name -> tiles
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # tile id -> problems
    store_problems: list[str] = field(default_factory=list)
    damaged_indices: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.store_problems

    def to_dict(self) -> dict:
        return {
            "location": self.location, "ok": self.ok, "n_tiles": self.n_tiles, "n_checked": self.n_checked,
            "counts": self.counts, "problems": dict(self.problems), "store_problems": self.store_problems,
        }

    def lines(self) -> list[str]:
        out = [f"{pid}: {p}" for pid, ps in self.problems.items() for p in ps]
        return self.store_problems + out


def _chunk_keys(fs: FeatureStore, name: str) -> set[str]:
    """Keys of the chunk (or shard) objects that exist for one array."""
    zstore = fs._group().store

    async def collect() -> set[str]:
        # "c/1/0/0" or "c.1.0.0" keys; a local store lists by directory, so list the array's.
        return {k async for k in zstore.list_prefix(f"{name}/") if k[len(name) + 1:][:2] in ("c/", "c.")}

    return sync(collect())


def _arrays(fs: FeatureStore) -> list[str]:
    sch, enc = fs.schema, parse_preset(fs.schema.features.encoding)
    names = [S.feature_path(t, b) for t in fs.timesteps for b in fs.blocks]
    names += [S.scale_offset_path(t, b) for t in fs.timesteps for b in fs.blocks] if enc.int8 else []
    names += [S.LABELS] if sch.has_labels else []
    names += [S.INSTANCES] if sch.store_instances else []
    names += [S.RGB] if sch.store_rgb else []
    names += [S.SSL] if sch.ssl_dim else []
    names += [S.LATENT] if sch.latent_shape else []
    return names


def _check_values(name: str, data: np.ndarray, fs: FeatureStore) -> list[str]:
    """Per-tile value problems for one array's block of tiles; '' where fine."""
    flat = data.reshape(len(data), -1)
    out = [""] * len(data)
    if name.startswith(S.FEATURES_GROUP) or name in (S.SSL, S.LATENT):
        for i in np.flatnonzero(~np.isfinite(flat).all(axis=1)):
            out[i] = f"{name}: NaN or inf values"
    elif name == S.LABELS:
        n_cls, ign = len(fs.schema.class_names), fs.schema.ignore_index
        for i in np.flatnonzero(((flat >= n_cls) & (flat != ign)).any(axis=1)):
            out[i] = f"{name}: values outside classes 0..{n_cls - 1} and ignore {ign}"
    return out


def verify_store(
    where: str | os.PathLike, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Read every written tile of the store and report what is wrong, by tile id.

    Raises the reader's error when the store cannot be opened at all.
    """
    fs = open_store(where)  # a store that cannot be opened at all is an error, not a report
    rep = VerifyReport(str(fs.location))
    try:
        status = fs.status()
        ids = fs.tile_ids()
        fs.table()  # every column of the tile table decodes (crc32c) and has its chunks
    except PathsegdiffError as e:
        rep.store_problems.append(str(e))
        return rep
    rep.n_tiles = len(status)
    rep.counts = {S.STATUS_NAMES.get(int(v), str(v)): int((status == v).sum()) for v in np.unique(status)}
    unknown = sorted(set(np.unique(status).tolist()) - set(S.STATUS_NAMES))
    if unknown:
        rep.store_problems.append(f"{fs.location}: unknown status codes {unknown} in {S.STATUS}")
    rep.store_problems.extend(_table_problems(fs, len(status)))
    try:
        fs.encoding  # noqa: B018 -- reads the PCA bases and checks them against basis_sha256
    except PathsegdiffError as e:
        rep.store_problems.append(str(e))
    written = fs.written()
    rep.n_checked = len(written)
    damaged: set[int] = set()

    for name in _arrays(fs):
        try:
            arr = fs._array(name)
            keys = _chunk_keys(fs, name)
        except PathsegdiffError as e:
            rep.store_problems.append(str(e))
            continue
        shard = fs.schema.shard_tiles
        for i in written:
            coords = (int(i) // shard,) + (0,) * (arr.ndim - 1)
            if f"{name}/{arr.metadata.encode_chunk_key(coords)}" not in keys:
                rep.problems[str(ids[i])].append(f"{name}: chunk missing")
                damaged.add(int(i))
        # Read a few tiles at a time; a block that fails is re-read tile by tile to name the culprit.
        for start in range(0, len(written), READ_BATCH):
            for idx, data in _read_tiles(fs, name, written[start : start + READ_BATCH], rep, ids, damaged):
                for i, msg in zip(idx, _check_values(name, data, fs)):
                    if msg:
                        rep.problems[str(ids[i])].append(msg)
                        damaged.add(int(i))
            if progress:
                progress(min(READ_BATCH, len(written) - start))
    rep.damaged_indices = sorted(damaged)
    return rep


def _table_problems(fs: FeatureStore, n: int) -> list[str]:
    """Missing chunks of the tile table and status: the writer writes every one of them."""
    out = []
    for name in [f"{S.TILES_GROUP}/{c}" for c in S.TILE_COLUMNS] + [S.STATUS]:
        try:
            arr, keys = fs._array(name), _chunk_keys(fs, name)
        except PathsegdiffError as e:
            out.append(str(e))
            continue
        size = arr.chunks[0]
        gone = [c for c in range(-(-n // size)) if f"{name}/{arr.metadata.encode_chunk_key((c,))}" not in keys]
        if gone:
            out.append(f"{fs.location}: {name}: chunks {gone[:5]} missing (tile table damaged)")
    return out


def _read_tiles(fs, name, sel, rep, ids, damaged):
    """Yield (indices, data) for readable tiles of ``sel``; record unreadable ones."""
    arr = fs._array(name)
    if len(sel) and sel[-1] - sel[0] == len(sel) - 1:
        try:
            yield sel, np.asarray(arr[int(sel[0]) : int(sel[-1]) + 1])
            return
        except Exception:
            pass  # fall through to single tiles
    for i in sel:
        try:
            yield np.array([i]), np.asarray(arr[int(i) : int(i) + 1])
        except Exception as e:  # crc32c mismatch, truncated or undecodable chunk
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            rep.problems[str(ids[i])].append(f"{name}: unreadable chunk ({msg})")
            damaged.add(int(i))
