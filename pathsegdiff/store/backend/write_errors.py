"""What a failed write becomes: one clear store error, and no chunk write left running after it."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from contextlib import contextmanager

from pathsegdiff.errors import PathsegdiffError, StoreReadOnlyError, StoreWriteError
from pathsegdiff.store.backend.location import Location, redact


@contextmanager
def write_errors(loc: Location, what: str) -> Iterator[None]:
    """Turn an OSError while writing (disk full, file-size limit, no permission) into one clear store error."""
    try:
        yield
    except PathsegdiffError:
        raise
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "; check the credentials for this location" if loc.kind == "url" else ""
            raise StoreReadOnlyError(
                f"{loc}: cannot write {what}: permission denied ({redact(e.strerror or e)}){hint}"
            ) from e
        full = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file size limit exceeded"}
        if e.errno in full:
            reason, fix = full[e.errno], "free space (or raise the limit) and rerun to resume"
        elif isinstance(e, FileNotFoundError) and loc.kind == "url":
            reason = f"the bucket does not exist ({redact(e.strerror or e)})"
            fix = "create the bucket or correct the URL, then rerun"
        else:
            reason, fix = redact(e.strerror or e), "rerun to resume once that is mended"
        raise StoreWriteError(f"{loc}: writing {what} failed: {reason}. Nothing written is lost: {fix}") from e


async def settle_pending_writes(timeout: float = 30.0) -> None:
    """Wait for the chunk writes a failed batch leaves behind.

    zarr writes an array's chunks as concurrent tasks and stops waiting at the
    first failure; the others keep running.  Waiting for them means none lands
    after the error is reported (or the lock released), and none is destroyed
    pending at exit, which asyncio reports with a traceback on stderr.
    """
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
