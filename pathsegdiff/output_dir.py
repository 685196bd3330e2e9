"""Output folders a command may replace: only its own earlier output, never a user's files.

A command that writes a folder (``predict -o``, ``demo -o``, ``pretrain -o``)
leaves a marker file in it naming the command.  ``--overwrite`` replaces a
folder only when that marker names the same command (or, for folders written
before markers existed, when the folder holds only names the command writes)
and nothing else is in it; anything else is refused in one line, with or
without ``--overwrite``.  The check runs before the long work; the folder is
emptied only when the command is about to write.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import StoreExistsError

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
