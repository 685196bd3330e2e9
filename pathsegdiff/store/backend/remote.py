"""A remote store's client errors become the project's, once, where the store meets its location.

An object store's client (s3fs over aiobotocore and aiohttp) raises its own
exceptions for what is not a plain file-system answer: a server that cannot be
reached, a request that times out, credentials that cannot be found.  They are
not ``OSError``, so nothing in the store would recognise them.  Every zarr
store opened for a URL is wrapped in :class:`RemoteStore`, which translates
them on every call (metadata, chunk reads and writes, listing, deletion), so
library callers, the CLI and a worker of a distributed run all get a
``StoreAccessError`` (credentials) or a ``RemoteStoreError`` (the server),
never the client's exception, and never "the store is gone".
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from pathsegdiff.errors import PathsegdiffError, RemoteStoreError, StoreAccessError
from pathsegdiff.store.backend.zarr_compat import WrapperStore

# Libraries of a remote store's client whose own errors are not OSError, so the store layer lets them by.
REMOTE_CLIENTS = ("botocore", "aiobotocore", "aiohttp", "s3fs")
# Environment variables whose values are secrets; never echoed in an error message.
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING")
_URL_PASSWORD = re.compile(r"(//[^/:@\s]+):[^/@\s]+@")


def is_remote_client_error(e: BaseException) -> bool:
    """``e`` was raised by a remote store's client (server unreachable, request refused), not by us."""
    return type(e).__module__.split(".")[0] in REMOTE_CLIENTS


def redact(text: object) -> str:
    """``text`` (often an exception from a remote store) without secret values or a URL's password."""
    out = str(text)
    for var in SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            out = out.replace(value, "***")
    return _URL_PASSWORD.sub(r"\1:***@", out)


def translate(e: BaseException, where: str) -> PathsegdiffError | None:
    """The project's error for a remote client's ``e`` (None: ``e`` is not one)."""
    if isinstance(e, PathsegdiffError) or not isinstance(e, Exception) or not is_remote_client_error(e):
        return None
    name, text = type(e).__name__, " ".join(redact(e).split())
    if "Credential" in name or "Token" in name:  # NoCredentialsError, PartialCredentialsError, ...
        return StoreAccessError(f"{where}: access denied ({name}: {text}); check the credentials for this location")
    return RemoteStoreError(f"{where}: the store's server failed ({name}: {text}); check the endpoint and the "
                            "network, then rerun (tiles not yet written stay todo)")


@contextmanager
def remote_errors(where: str) -> Iterator[None]:
    """Raise the project's error in place of a remote client's (for calls made on fsspec directly)."""
    try:
        yield
    except Exception as e:
        mine = translate(e, where)
        if mine is None:
            raise
        raise mine from e


class RemoteStore(WrapperStore):
    """A zarr store for a URL whose every call raises the project's errors for its client's failures."""

    def __init__(self, store: Any, where: str = "") -> None:
        super().__init__(store)
        self.inner = store
        self.where = where or str(store)

    def with_read_only(self, read_only: bool = False) -> RemoteStore:
        return RemoteStore(self.inner.with_read_only(read_only), self.where)

    def __str__(self) -> str:
        return self.where

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        with remote_errors(self.where):
            return await self.inner.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        with remote_errors(self.where):
            return await self.inner.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        with remote_errors(self.where):
            return await self.inner.exists(key)

    async def set(self, key: str, value: Any) -> None:
        with remote_errors(self.where):
            await self.inner.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        with remote_errors(self.where):
            await self.inner.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        with remote_errors(self.where):
            await self.inner.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        with remote_errors(self.where):
            await self.inner.delete_dir(prefix)

    async def is_empty(self, prefix: str) -> bool:
        with remote_errors(self.where):
            return await self.inner.is_empty(prefix)

    async def clear(self) -> None:
        with remote_errors(self.where):
            await self.inner.clear()

    async def list(self) -> AsyncIterator[str]:
        with remote_errors(self.where):
            async for key in self.inner.list():
                yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        with remote_errors(self.where):
            async for key in self.inner.list_prefix(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        with remote_errors(self.where):
            async for key in self.inner.list_dir(prefix):
                yield key
