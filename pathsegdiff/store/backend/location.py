"""Where a store lives: a local directory, a ``.zip`` made by ``pack``, or an fsspec URL.

Turns a user-given location into a zarr ``Store`` and says whether it is a
local directory (which is what the writer lock needs).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import zarr.storage

from pathsegdiff.errors import NotAStoreError, StoreNotFoundError, StoreReadOnlyError
from pathsegdiff.store.backend.remote import REMOTE_CLIENTS, RemoteStore, is_remote_client_error, redact

__all__ = ["REMOTE_CLIENTS", "Location", "is_remote_client_error", "open_zarr_store", "parse_location", "redact",
           "same_or_inside"]


@dataclass(frozen=True)
class Location:
    """A parsed store location; ``local_dir`` is set only for a plain directory."""

    raw: str
    kind: str  # "dir" | "zip" | "url"
    local_dir: Path | None = None

    def __str__(self) -> str:
        return self.raw


def parse_location(where: str | os.PathLike) -> Location:
    raw = os.fspath(where)
    if "://" in raw and not raw.startswith("file://"):
        return Location(raw, "url")
    path = Path(raw.removeprefix("file://")).expanduser()
    if path.suffix.lower() == ".zip":
        return Location(raw, "zip")
    return Location(raw, "dir", path)


def same_or_inside(src: Location, dst: Location) -> bool:
    """Whether ``dst`` is ``src`` (spelled any way) or lies inside it: writing there would destroy or grow the source."""
    if src.kind == "url" or dst.kind == "url":
        a, b = src.raw.rstrip("/"), dst.raw.rstrip("/")
        return a == b or b.startswith(a + "/")
    a = Path(src.raw.removeprefix("file://")).expanduser().resolve()
    b = Path(dst.raw.removeprefix("file://")).expanduser().resolve()
    return a == b or a in b.parents


def _storage_options() -> dict:
    """Endpoint for S3-compatible servers from the usual environment variable."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def open_zarr_store(loc: Location, read_only: bool) -> zarr.storage.StoreLike:
    """A zarr store object for ``loc``; missing paths raise StoreNotFoundError when reading."""
    if loc.kind == "dir":
        if read_only and not loc.local_dir.is_dir():
            if loc.local_dir.exists():
                raise NotAStoreError(f"{loc}: not a store (a file, not a directory)")
            raise StoreNotFoundError(f"{loc}: no such store")
        return zarr.storage.LocalStore(loc.local_dir, read_only=read_only)
    if loc.kind == "zip":
        if not read_only:
            raise StoreReadOnlyError(f"{loc}: a packed .zip store is read-only; write to a directory and pack it")
        path = Path(loc.raw.removeprefix("file://"))
        if not path.exists():
            raise StoreNotFoundError(f"{loc}: no such file")
        if not zipfile.is_zipfile(path):
            raise NotAStoreError(f"{loc}: not a zip file")
        return zarr.storage.ZipStore(path, mode="r")
    opts = _storage_options() if loc.raw.startswith("s3://") else {}
    try:
        # Its client's own errors (server down, no credentials) become the project's on every call (remote.py).
        return RemoteStore(zarr.storage.FsspecStore.from_url(loc.raw, read_only=read_only, storage_options=opts or None),
                           loc.raw)
    except ImportError as e:
        from pathsegdiff.errors import MissingDependencyError

        raise MissingDependencyError(e.name or "s3fs", "remote", f"opening {loc.raw}") from e
