"""Open a store's root group and read its ``pathsegdiff`` attributes (presence and layout version checked)."""

from __future__ import annotations

import json
from typing import Any

import zarr

from pathsegdiff.errors import CorruptStoreError, NotAStoreError, SchemaVersionError, StoreAccessError, StoreNotFoundError
from pathsegdiff.store import schema as S
from pathsegdiff.store.backend.location import Location, open_zarr_store, redact


def open_group(loc: Location, read_only: bool = True) -> zarr.Group:
    zstore = open_zarr_store(loc, read_only=read_only)
    try:
        return zarr.open_group(zstore, mode="r" if read_only else "r+", zarr_format=3)
    except FileNotFoundError:
        raise (StoreNotFoundError if loc.kind == "dir" and not loc.local_dir.exists() else NotAStoreError)(
            f"{loc}: not a pathsegdiff store (no zarr v3 group metadata)"
        ) from None
    except PermissionError as e:  # e.g. an object store refusing the credentials
        raise StoreAccessError(f"{loc}: access denied ({redact(e)}); check the credentials for this location") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise CorruptStoreError(f"{loc}: damaged store metadata (zarr.json): {e}") from None


def read_root_attrs(loc: Location) -> dict[str, Any]:
    """The ``pathsegdiff`` root attributes, checked for presence and version."""
    attrs = open_group(loc).attrs.asdict()
    if S.ATTR_KEY not in attrs:
        raise NotAStoreError(f"{loc}: a zarr group, but not a pathsegdiff store (no '{S.ATTR_KEY}' attribute)")
    meta = attrs[S.ATTR_KEY]
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > S.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{loc}: store layout version {version!r} is newer than this pathsegdiff reads "
            f"({S.SCHEMA_VERSION}); upgrade pathsegdiff"
        )
    return meta
