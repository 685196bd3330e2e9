"""Temporary files that a writer killed in the middle of an object write leaves behind.

zarr's LocalStore writes every object to ``<name>.<32 hex digits>.partial``
beside its final name and renames it into place, so a reader never sees half
an object.  A writer killed before the rename (SIGKILL, power loss) leaves the
temporary file: harmless to readers, but dead bytes (a whole feature chunk
each) that ``store copy`` and ``pack`` would carry, and a store that differs
from an uninterrupted one.  The next writer, once it holds the lock (so no
other writer can be mid-write), removes them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_partial_writes(store_dir: str | os.PathLike) -> list[Path]:
    """Delete zarr's leftover temporary files under ``store_dir``; returns what was removed."""
    removed = []
    for folder, _, files in os.walk(store_dir):
        for name in files:
            if _TEMPORARY.search(name):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
