"""A single-writer lock for a store directory.

The lock is a file created with O_CREAT | O_EXCL (atomic on local file
systems) that records the holder's pid and host.  A lock whose process is gone
on this host is stale and is taken over; a lock held from another host is
refused with its owner named, since we cannot see whether that process lives.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from pathsegdiff.errors import StoreLockedError
from pathsegdiff.store.schema import LOCK_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StoreLock:
    """Held while a writer has the store open; released on close or at exit."""

    def __init__(self, store_dir: str | os.PathLike):
        self.path = Path(store_dir) / LOCK_NAME
        self.held = False

    def read_owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a writer killed mid-create: treat as stale

    def is_stale(self, owner: dict | None) -> bool:
        if owner is None:
            return False
        if not owner or "pid" not in owner:
            return True
        return owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"]))

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.read_owner()
                if self.is_stale(owner):
                    self._break_stale()
                    continue
                if owner is None:  # released between our open and our read
                    continue
                raise self._locked(owner) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise StoreLockedError(f"{self.path.parent}: could not take the writer lock (contended)")

    def _locked(self, owner: dict) -> StoreLockedError:
        return StoreLockedError(
            f"{self.path.parent}: another writer holds the store "
            f"(pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}). "
            f"Wait for it, or if that process is gone delete {self.path}"
        )

    def refuse_if_held(self) -> None:
        """Raise now if a live writer holds the store: before a caller spends minutes loading a model."""
        owner = self.read_owner()
        if owner and not self.is_stale(owner):
            raise self._locked(owner)

    def _break_stale(self) -> None:
        # Rename first: of several processes breaking the same stale lock, only
        # one rename succeeds, so no one deletes a lock that was just taken.
        grave = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        owner = json.loads(grave.read_text() or "{}") if grave.stat().st_size else {}
        if owner and not self.is_stale(owner):
            # We renamed a fresh lock taken after our staleness check: put it back.
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        grave.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            owner = self.read_owner()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
