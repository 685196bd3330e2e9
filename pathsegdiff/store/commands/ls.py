"""``pathsegdiff store ls``: rows of the tile table, optionally of one status.

Only the status is read whole; the other columns are read for the rows shown
(``--limit``), and every table chunk's checksum is checked without decoding
it, so listing the first rows of a store of a million tiles costs a fraction
of a second.
"""

from __future__ import annotations

import os

import numpy as np

from pathsegdiff.errors import ConfigError
from pathsegdiff.store import schema as S
from pathsegdiff.store.reader import open_store

COLUMNS = ("tile_id", "slide_id", "x", "y", "split")


def list_tiles(where: str | os.PathLike, status: str | None = None, limit: int = 50) -> list[dict]:
    """Rows (index, tile_id, slide_id, x, y, split, status) of the store's tiles, ``status`` ones only if given;
    at most ``limit`` (0: all)."""
    codes = {name: code for code, name in S.STATUS_NAMES.items()}
    if status is not None and status not in codes:
        raise ConfigError(f"--status {status!r}: choose one of {', '.join(codes)}")
    fs = open_store(where)
    fs.check_table()  # a damaged table is an error, whichever rows are shown (bytes checked, nothing decoded)
    st = fs.status()
    idx = np.arange(len(st)) if status is None else np.flatnonzero(st == codes[status])
    if limit:
        idx = idx[:limit]
    if not len(idx):
        return []
    contiguous = idx[-1] - idx[0] == len(idx) - 1
    cols = fs.table(COLUMNS, rows=slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx)
    return [{"index": int(i), **{c: cols[c][k] for c in COLUMNS}, "status": S.STATUS_NAMES.get(int(st[i]), "?")}
            for k, i in enumerate(idx)]


def format_rows(rows: list[dict]) -> str:
    """The rows as tab-separated lines under a header."""
    head = "\t".join(("index", *COLUMNS, "status"))
    return "\n".join([head, *("\t".join(str(r[c]) for c in ("index", *COLUMNS, "status")) for r in rows)])
