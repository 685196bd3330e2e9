"""Child process for the resume test: fills a store in batches, SIGKILLs itself at the Nth object write.

Run as ``python -m helpers.kill_writer STORE KILL_AT BATCH PHASE`` (tests/store/test_resume.py).

Objects are written by zarr's LocalStore (metadata, tile table, status) and,
for tile chunks, by the store's own ``chunk_io.put_file``: both are counted.
"""

import os
import signal
import sys
import threading

import zarr

from helpers import synth
from pathsegdiff.store import open_or_create
from pathsegdiff.store.backend import chunk_io

path, kill_at, batch, phase = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
calls = {"n": 0}
store_set = zarr.storage.LocalStore.set
put_file = chunk_io.put_file
lock = threading.Lock()  # chunk files are written from several threads


def count() -> None:
    with lock:
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no atexit: like a crash at 3 a.m.


async def counting_set(self, key, value):
    count()
    return await store_set(self, key, value)


def counting_put(path, parts):
    count()
    return put_file(path, parts)


chunk_io.put_file = counting_put


if phase == "create":  # count the metadata and tile-table writes of store creation too
    zarr.storage.LocalStore.set = counting_set
with open_or_create(path, synth.schema(), synth.records(), {"test": "resume"}) as w:
    zarr.storage.LocalStore.set = counting_set
    todo = list(w.missing())
    for k in range(0, len(todo), batch):
        idx = todo[k : k + batch]
        w.write(idx, synth.tile_batch(idx))
