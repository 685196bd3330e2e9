"""Output folders a command may replace: only its own earlier output, never a user's files.

A command that writes a folder (``predict -o``, ``demo -o``, ``pretrain -o``)
leaves a marker file in it naming the command.  ``--overwrite`` replaces a
folder only when that marker names the same command (or, for folders written
before markers existed, when the folder holds only names the command writes)
and nothing else is in it; anything else is refused in one line, with or
without ``--overwrite``.  The check runs before the long work; the folder is
emptied only when the command is about to write.
``convert timm-vit`` writes no marker (its folder is a model others load): it
is recognised by its three files alone.

:func:`require_room` is the other check before long work: the folder can be
written (a probe file) and its device has the room; :func:`written_or_removed`
turns a write that fails later (a disk filled meanwhile) into one line and
removes what the command had started to write.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import OutputError, PathsegdiffError, StoreExistsError

MARKER = ".pathsegdiff-output.json"


@dataclass(frozen=True)
class OutputKind:
    """What one command writes at the top of its output folder."""

    command: str
    names: frozenset[str]  # every top-level entry the command may write
    required: frozenset[str]  # entries that identify an unmarked folder from before markers existed

    def owns(self, folder: Path) -> bool:
        """True when ``folder`` holds this command's earlier output and nothing else."""
        entries = {p.name for p in folder.iterdir()}
        if MARKER in entries:
            try:
                marked = json.loads((folder / MARKER).read_text()).get("command")
            except (OSError, ValueError, AttributeError):
                return False
            return marked == self.command and entries <= self.names | {MARKER}
        return bool(self.required) and self.required <= entries <= self.names


def check_output_dir(out: str | Path, kind: OutputKind, overwrite: bool) -> Path:
    """Refuse ``out`` unless it is missing, empty, or (with ``overwrite``) this command's own earlier output."""
    out = Path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise StoreExistsError(f"{out}: exists and is a file; choose a folder for the {kind.command} output")
    if not any(out.iterdir()):
        return out
    if not kind.owns(out):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in kind.names | {MARKER})
        what = f" ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})" if foreign else ""
        raise StoreExistsError(f"{out}: holds files that '{kind.command}' did not write{what}; "
                               "choose another folder (--overwrite only replaces this command's own output)")
    if not overwrite:
        raise StoreExistsError(f"{out}: holds an earlier '{kind.command}' output; pass --overwrite to replace it")
    return out


def replace_output_dir(out: str | Path, kind: OutputKind, overwrite: bool) -> Path:
    """Check ``out`` again, empty it if it is this command's earlier output, and mark it as this command's."""
    out = check_output_dir(out, kind, overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"command": kind.command}))
    return out


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def require_room(out: str | Path, need_bytes: int, what: str) -> None:
    """One line naming ``out`` when it cannot be written or its device has less than ``need_bytes`` free.

    Probes by creating (and removing) a file in ``out``, or in the folders it would create, so a read-only
    mount, a missing permission or an unwritable parent is found before the long work starts."""
    out = Path(out)
    made: list[Path] = []
    try:
        missing = []
        p = out
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".pathsegdiff-probe-")
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(out).free
    except OSError as e:
        raise OutputError(f"{out}: cannot write {what} here ({e.strerror or e}); choose another folder") from None
    finally:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
    if free < need_bytes:
        raise OutputError(f"{out}: {what} needs about {_mb(need_bytes)}, and its disk has {_mb(free)} free; "
                          "free some space or choose another folder")


FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file size limit exceeded", errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


@contextlib.contextmanager
def written_or_removed(out: str | Path, what: str, remove: bool = True) -> Iterator[None]:
    """Writing ``what`` under ``out``: an OSError becomes one line naming the folder, and (``remove``) the folder
    this command was filling is removed, so nothing half-written is left looking whole."""
    try:
        yield
    except OSError as e:
        if isinstance(e, PathsegdiffError) or e.errno is None:  # already one line, or not an I/O failure
            raise
        if remove:
            shutil.rmtree(out, ignore_errors=True)
        reason = FULL.get(e.errno, e.strerror or str(e))
        left = "nothing was left there" if remove else "what was written before stays"
        raise OutputError(f"{out}: writing {what} failed: {reason} ({left}); free space or choose another "
                          "folder, then run the command again") from None
