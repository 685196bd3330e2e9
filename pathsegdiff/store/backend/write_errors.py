"""What a failed write becomes: one clear store error, and no chunk write left running after it."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from contextlib import contextmanager

from pathsegdiff.errors import PathsegdiffError, StoreReadOnlyError, StoreWriteError
from pathsegdiff.store.backend.location import Location, redact


@contextmanager
def write_errors(loc: Location, what: str, resumable: bool = True) -> Iterator[None]:
    """Turn an OSError while writing (disk full, file-size limit, no permission) into one clear store error.

    ``resumable``: an extraction resumes where it stopped; a copy, pack or compact starts over (and leaves
    nothing half-written under its destination), so its advice says so."""
    again = "rerun to resume" if resumable else "run the command again (it starts over)"
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
            reason, fix = full[e.errno], f"free space (or raise the limit) and {again}"
        elif isinstance(e, FileNotFoundError) and loc.kind == "url":
            reason = f"the bucket does not exist ({redact(e.strerror or e)})"
            fix = "create the bucket or correct the URL, then rerun"
        else:
            reason, fix = redact(e.strerror or e), f"{again} once that is mended"
        kept = "Nothing written is lost" if resumable else "Nothing was left under the destination"
        err = StoreWriteError(f"{loc}: writing {what} failed: {reason}. {kept}: {fix}")
        err.reason = reason  # for a caller that rewords the advice (store compact)
        raise err from e


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
