"""A remote store's client errors become the project's on every call, where the store meets its location
(store/backend/remote.py), so later reads and writes are covered and a failed request is never "the store is gone"."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
import zarr.storage

from pathsegdiff.errors import RemoteStoreError, StoreAccessError, StoreNotFoundError
from pathsegdiff.store.backend.remote import RemoteStore, translate
from pathsegdiff.store.backend.zarr_compat import sync
from pathsegdiff.store.missing import check_present


class EndpointConnectionError(Exception):
    """Stands for botocore's: the module is what marks a remote client's error."""


class NoCredentialsError(Exception):
    pass


EndpointConnectionError.__module__ = NoCredentialsError.__module__ = "botocore.exceptions"


class Flaky(zarr.storage.MemoryStore):
    """A store whose server goes away once ``down`` is set."""

    down: type[Exception] | None = None

    async def get(self, key, prototype, byte_range=None):
        if self.down:
            raise self.down('Could not connect to the endpoint URL: "http://127.0.0.1:9/lab"')
        return await super().get(key, prototype, byte_range)

    async def exists(self, key):
        if self.down:
            raise self.down("no route")
        return await super().exists(key)

    async def set(self, key, value):
        if self.down:
            raise self.down("no route")
        await super().set(key, value)


def test_translate_names_the_location_and_keeps_one_line():
    e = translate(EndpointConnectionError("Could not connect\nto http://h:1/x"), "s3://lab/s.zarr")
    assert isinstance(e, RemoteStoreError) and str(e).startswith("s3://lab/s.zarr: the store's server failed")
    assert "\n" not in str(e) and "http://h:1/x" in str(e)
    assert isinstance(translate(NoCredentialsError("Unable to locate credentials"), "s3://x"), StoreAccessError)
    assert translate(OSError("disk"), "s3://x") is None and translate(KeyError("k"), "s3://x") is None


def test_reads_and_writes_after_opening_raise_the_projects_errors():
    inner = Flaky()
    store = RemoteStore(inner, "s3://lab/s.zarr")
    arr = zarr.create_array(store, name="a", shape=(4,), chunks=(1,), dtype="uint8", fill_value=0)
    arr[:] = np.arange(4, dtype=np.uint8)
    inner.down = EndpointConnectionError
    with pytest.raises(RemoteStoreError, match="s3://lab/s.zarr: the store's server failed"):
        arr[1]  # a read long after the store was opened
    with pytest.raises(RemoteStoreError):
        arr[2] = 9
    with pytest.raises(RemoteStoreError):
        sync(store.exists("zarr.json"))
    inner.down = NoCredentialsError
    with pytest.raises(StoreAccessError, match="credentials"):
        arr[1]
    inner.down = None
    assert int(arr[3]) == 3 and isinstance(store.with_read_only(True), RemoteStore)


def test_a_failed_request_is_never_the_store_is_gone():
    class Reader:
        location = "s3://lab/s.zarr"

        def __init__(self, fail):
            self.fail = fail

        def object_exists(self, key):
            if self.fail:
                raise self.fail
            return False

    with pytest.raises(RemoteStoreError):
        check_present(Reader(RemoteStoreError("s3://lab/s.zarr: the store's server failed")))
    with pytest.raises(StoreAccessError, match="access denied"):
        check_present(Reader(PermissionError("403 Forbidden")))
    with pytest.raises(StoreNotFoundError, match="the store is gone"):
        check_present(Reader(None))  # the server answered: no zarr.json
