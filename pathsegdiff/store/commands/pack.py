"""Pack a store into one uncompressed ZIP64 that opens read-only without unpacking.

Packing is a copy whose destination is a ``.zip``: entries are stored (not
deflated), since chunks are already encoded and stored entries are read in
place by zarr's ZipStore; the zip carries ``MANIFEST.sha256``; it is written
beside its destination and renamed into place, so a crash never leaves a half
zip under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pathsegdiff.errors import ConfigError
from pathsegdiff.store.commands.copy import copy_store


def pack_store(
    src: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``out`` (a .zip) from the store ``src``; returns the zip path."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"{out}: the packed store must end in .zip")
    copy_store(src, out, overwrite=overwrite, progress=progress)
    return out
