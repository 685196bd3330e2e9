"""Pack a store directory into one uncompressed ZIP64 that opens read-only without unpacking.

Entries are stored (not deflated): chunks are already encoded, and stored
entries can be read in place by zarr's ZipStore.  The zip is written beside
its destination and renamed into place, so a crash never leaves a half zip
under the final name.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable

from pathsegdiff.errors import ConfigError, StoreExistsError, StoreLockedError
from pathsegdiff.store import schema as S
from pathsegdiff.store.location import parse_location
from pathsegdiff.store.lock import StoreLock
from pathsegdiff.store.reader import open_store


def store_files(root: Path) -> list[Path]:
    """Files that belong to the store (metadata first, then chunks), without the lock."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(S.LOCK_NAME)]
    return sorted(files, key=lambda p: (p.name != "zarr.json", p.relative_to(root).as_posix()))


def pack_store(
    src: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``out`` (a .zip) from the store directory ``src``; returns the zip path."""
    fs = open_store(src)  # proves it is a readable store first
    loc = parse_location(src)
    if loc.kind != "dir":
        raise ConfigError(f"{src}: pack takes a store directory (this is a {loc.kind})")
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"{out}: the packed store must end in .zip")
    if out.exists() and not overwrite:
        raise StoreExistsError(f"{out}: exists; pass --overwrite to replace it")
    lock = StoreLock(loc.local_dir)
    owner = lock.read_owner()
    if owner is not None and not lock.is_stale(owner):
        raise StoreLockedError(
            f"{src}: a writer (pid {owner.get('pid')} on {owner.get('host')}) is filling this store; "
            "pack it when that run ends"
        )
    root = loc.local_dir
    tmp = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in store_files(root):
                zf.write(path, path.relative_to(root).as_posix())
                if progress:
                    progress(path.stat().st_size)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    del fs
    return out
