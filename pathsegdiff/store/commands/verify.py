"""Check a store: every written tile's chunks exist, decode (crc32c), are finite and in range.

A compact store's int8 scale/offset arrays are checked like the features,
and its PCA bases must be whole, finite and match the identity's hash.

Problems are reported by tile id.  Missing chunks are found from one listing
of the store's objects (``backend/listing.py``), because zarr would
otherwise hand back the fill value as if it were data.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pathsegdiff.errors import PathsegdiffError, RemoteStoreError, StoreAccessError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.listing import tiles_per_object
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


def _check_values(spec: S.ArraySpec, data: np.ndarray, fs: FeatureStore) -> list[str]:
    """Per-tile value problems for one array's block of tiles; '' where fine."""
    flat = data.reshape(len(data), -1)
    out = [""] * len(data)
    if spec.dtype.startswith("float"):  # features, scale/offset, ssl, latent: written values are finite
        for i in np.flatnonzero(~np.isfinite(flat).all(axis=1)):
            out[i] = f"{spec.name}: NaN or inf values"
    elif spec.kind == "labels":
        n_cls, ign = len(fs.schema.class_names), fs.schema.ignore_index
        for i in np.flatnonzero(((flat >= n_cls) & (flat != ign)).any(axis=1)):
            out[i] = f"{spec.name}: values outside classes 0..{n_cls - 1} and ignore {ign}"
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
    try:
        fs.encoding  # noqa: B018 -- reads the PCA bases and checks them against basis_sha256
    except PathsegdiffError as e:
        rep.store_problems.append(str(e))
    written = fs.written()
    rep.n_checked = len(written)
    damaged: set[int] = set()

    table = [a for a in S.store_arrays(fs.schema) if a.every_chunk]
    arrays = S.data_arrays(fs.schema)
    opened = []
    for spec in table + arrays:
        try:
            fs.array(spec.name)
            opened.append(spec.name)
        except PathsegdiffError as e:
            rep.store_problems.append(str(e))
    present = fs.present_chunks(opened)  # one listing of the store's objects for every array
    rep.store_problems += [f"{fs.location}: {a.name}: chunks {list(gone[:5])} missing (tile table damaged)"
                           for a in table if a.name in present and len(gone := np.flatnonzero(~present[a.name]))]
    for spec in (a for a in arrays if a.name in present):
        per = tiles_per_object(fs.array(spec.name))
        for i in written[~present[spec.name][written // per]]:
            rep.problems[str(ids[i])].append(f"{spec.name}: chunk missing")
            damaged.add(int(i))
        # Read a few tiles at a time; a block that fails is re-read tile by tile to name the culprit.
        for start in range(0, len(written), READ_BATCH):
            for idx, data in _read_tiles(fs, spec.name, written[start : start + READ_BATCH], rep, ids, damaged):
                for i, msg in zip(idx, _check_values(spec, data, fs)):
                    if msg:
                        rep.problems[str(ids[i])].append(msg)
                        damaged.add(int(i))
            if progress:
                progress(min(READ_BATCH, len(written) - start))
    rep.damaged_indices = sorted(damaged)
    return rep


def _read_tiles(fs, name, sel, rep, ids, damaged):
    """Yield (indices, data) for readable tiles of ``sel``; record unreadable ones."""
    arr = fs.array(name)
    if len(sel) and sel[-1] - sel[0] == len(sel) - 1:
        try:
            yield sel, np.asarray(arr[int(sel[0]) : int(sel[-1]) + 1])
            return
        except (RemoteStoreError, StoreAccessError):
            raise  # the store cannot be reached: not damage
        except Exception:
            pass  # fall through to single tiles
    for i in sel:
        try:
            yield np.array([i]), np.asarray(arr[int(i) : int(i) + 1])
        except (RemoteStoreError, StoreAccessError):
            raise
        except Exception as e:  # crc32c mismatch, truncated or undecodable chunk
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            rep.problems[str(ids[i])].append(f"{name}: unreadable chunk ({msg})")
            damaged.add(int(i))
