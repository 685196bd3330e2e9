"""Copy a store between a directory, a zip and an object store, with a checksum manifest.

Every object is copied byte for byte (chunks are not re-encoded), its sha256
recorded in ``MANIFEST.sha256`` (``sha256sum`` format: ``<hex>  <key>``) at the
destination's root, and the copy is checked at the end: the manifest against
the destination's bytes, then ``verify`` on every written tile.  A teammate
who receives a store runs ``pathsegdiff store verify --manifest`` to check it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

from pathsegdiff.errors import ConfigError, CorruptStoreError, StoreExistsError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.remote import remote_errors
from pathsegdiff.store.backend.zarr_compat import CpuBuffer, default_buffer_prototype, sync
from pathsegdiff.store.backend.location import open_zarr_store, parse_location, same_or_inside
from pathsegdiff.store.reader import FeatureStore, open_store
from pathsegdiff.store.backend.write_errors import write_errors

MANIFEST = "MANIFEST.sha256"


def _keys(fs: FeatureStore) -> list[str]:
    store = fs.zarr_store

    async def collect() -> list[str]:
        return sorted([k async for k in store.list()])

    keys = sync(collect())
    for k in keys:  # a crafted zip must not make a copy write outside its destination
        if k.startswith("/") or "\\" in k or ".." in k.split("/"):
            raise CorruptStoreError(f"{fs.location}: refusing object key {k!r} (absolute or with '..')")
    # Metadata first, so a reader of a half-copied remote store sees a store, not stray chunks.
    return sorted((k for k in keys if k != MANIFEST and not k.startswith(S.LOCK_NAME)),
                  key=lambda k: (not k.endswith("zarr.json"), k))


def _get(store, key: str) -> bytes:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        raise CorruptStoreError(f"{key}: listed but cannot be read")
    return buf.to_bytes()


def read_manifest(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, key = line.partition("  ")
            out[key] = digest
    return out


def check_manifest(where: str | os.PathLike) -> list[str]:
    """Problems found comparing a store's objects with its MANIFEST.sha256 (empty: all match)."""
    fs = open_store(where)
    store = fs.zarr_store
    if not fs.object_exists(MANIFEST):
        return [f"{where}: no {MANIFEST} in this store"]
    want = read_manifest(_get(store, MANIFEST).decode())
    have = set(_keys(fs))
    problems = [f"{k}: missing" for k in sorted(set(want) - have)]
    problems += [f"{k}: not in the manifest" for k in sorted(have - set(want))]
    for k in sorted(set(want) & have):
        if hashlib.sha256(_get(store, k)).hexdigest() != want[k]:
            problems.append(f"{k}: checksum differs")
    return problems


def copy_store(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
               progress: Callable[[int], None] | None = None) -> int:
    """Copy every object of ``src`` to ``dst`` (directory, .zip or URL); returns bytes copied."""
    from pathsegdiff.store.backend.lock import StoreLock

    fs = open_store(src)
    src_loc, dst_loc = fs.location, parse_location(dst)
    if same_or_inside(src_loc, dst_loc):
        raise ConfigError(f"{dst}: the destination is the source store or inside it")
    if src_loc.kind == "dir":
        owner = StoreLock(src_loc.local_dir).read_owner()
        if owner and not StoreLock(src_loc.local_dir).is_stale(owner):
            raise StoreExistsError(f"{src}: a writer (pid {owner.get('pid')}) is filling this store; copy it later")
    with write_errors(dst_loc, "the copy", resumable=False):
        return _copy_objects(fs, dst, dst_loc, overwrite, progress)


def _copy_objects(fs: FeatureStore, dst, dst_loc, overwrite: bool, progress) -> int:
    from pathsegdiff.store.commands.verify import verify_store

    _refuse_existing(dst_loc, overwrite)
    keys = _keys(fs)
    src_store = fs.zarr_store
    lines, total = [], 0
    if dst_loc.kind == "zip":
        path = Path(dst_loc.raw.removeprefix("file://"))
        tmp = path.with_name(path.name + ".partial")
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for k in keys:
                    data = _get(src_store, k)
                    zf.writestr(k, data)
                    lines.append(f"{hashlib.sha256(data).hexdigest()}  {k}")
                    total += len(data)
                    if progress:
                        progress(len(data))
                zf.writestr(MANIFEST, "\n".join(lines) + "\n")
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed pack (disk full) leaves no half zip behind
            raise
        os.replace(tmp, path)
    else:
        dst_store = open_zarr_store(dst_loc, read_only=False)
        for k in keys:
            data = _get(src_store, k)
            sync(dst_store.set(k, CpuBuffer.from_bytes(data)))
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {k}")
            total += len(data)
            if progress:
                progress(len(data))
        sync(dst_store.set(MANIFEST, CpuBuffer.from_bytes(("\n".join(lines) + "\n").encode())))
    problems = check_manifest(dst)
    rep = verify_store(dst)
    if problems or not rep.ok:
        raise CorruptStoreError(f"{dst}: the copy does not check out: {(problems + rep.lines())[:5]}")
    return total


def _is_packed_store(path: Path) -> bool:
    """A zip written by ``store pack``: a root zarr.json carrying pathsegdiff's attributes, and the manifest."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "zarr.json" not in names or MANIFEST not in names:
                return False
            return S.ATTR_KEY in (json.loads(zf.read("zarr.json")).get("attributes") or {})
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def _refuse_existing(loc, overwrite: bool) -> None:
    """Refuse a destination that exists unless told to overwrite; never delete a non-store."""
    import shutil

    if loc.kind == "zip":
        path = Path(loc.raw.removeprefix("file://"))
        if path.exists() and not _is_packed_store(path):  # never replace a zip (or file) the user made
            raise StoreExistsError(f"{loc}: exists and is not a packed pathsegdiff store; choose another name "
                                   "(--overwrite only replaces a packed store)")
        if path.exists() and not overwrite:
            raise StoreExistsError(f"{loc}: exists; pass --overwrite to replace it")
        return
    try:
        open_store(str(loc))
        exists = True
    except Exception:
        exists = loc.kind == "dir" and loc.local_dir.exists() and any(loc.local_dir.iterdir())
    if not exists:
        return
    if not overwrite:
        raise StoreExistsError(f"{loc}: exists; pass --overwrite to replace it")
    if loc.kind == "dir":
        open_store(str(loc))  # raises for a directory that is not a store: never delete it
        foreign = S.foreign_entries(p.name for p in loc.local_dir.iterdir())
        if foreign:
            raise StoreExistsError(f"{loc}: holds files that are not the store's ({', '.join(foreign[:3])}); "
                                   "refusing to replace it: move them out or choose another destination")
        shutil.rmtree(loc.local_dir)
    else:
        import fsspec

        with remote_errors(loc.raw):
            fsys, path = fsspec.core.url_to_fs(loc.raw)
            fsys.rm(path, recursive=True)
