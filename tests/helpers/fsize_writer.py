"""Child process for the disk-full tests: fills a store in batches under a file-size limit.

Usage: python -m helpers.fsize_writer STORE LIMIT_BYTES BATCH LIMIT_FROM_BATCH

From batch number LIMIT_FROM_BATCH on (-1: before the store is created),
RLIMIT_FSIZE is LIMIT_BYTES (0: no limit), with SIGXFSZ ignored so that a
write past the limit fails with EFBIG the way a full disk fails with ENOSPC.
Prints one JSON line: the outcome, and the error's class and message.
"""

import json
import resource
import signal
import sys

from helpers import synth
from pathsegdiff.errors import PathsegdiffError
from pathsegdiff.store import open_or_create

path, limit, batch, limit_from = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


outcome = {"ok": True}
try:
    if limit and limit_from < 0:  # the limit is hit while the store is created
        limit_files()
    with open_or_create(path, synth.schema(), synth.records(), {"test": "disk-full"}) as w:
        todo = list(w.missing())
        for k, start in enumerate(range(0, len(todo), batch)):
            if limit and k == limit_from:
                limit_files()
            idx = todo[start : start + batch]
            w.write(idx, synth.tile_batch(idx))
except PathsegdiffError as e:
    outcome = {"ok": False, "error": type(e).__name__, "message": str(e),
               "bases": [c.__name__ for c in type(e).__mro__]}
print(json.dumps(outcome))
sys.exit(0 if outcome["ok"] else 3)
