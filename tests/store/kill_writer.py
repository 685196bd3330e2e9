"""Child process for the resume test: fills a store in batches, SIGKILLs itself at the Nth array write."""

import os
import signal
import sys

import synth
import zarr

from pathsegdiff.store import open_or_create

path, kill_at, batch, phase = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
calls = {"n": 0}
setitem = zarr.Array.__setitem__


def counting_setitem(self, key, value):
    calls["n"] += 1
    if calls["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no atexit: like a crash at 3 a.m.
    return setitem(self, key, value)


if phase == "create":  # count the tile-table writes of store creation too
    zarr.Array.__setitem__ = counting_setitem
with open_or_create(path, synth.schema(), synth.records(), {"test": "resume"}) as w:
    zarr.Array.__setitem__ = counting_setitem
    todo = list(w.missing())
    for k in range(0, len(todo), batch):
        idx = todo[k : k + batch]
        w.write(idx, synth.tile_batch(idx))
