"""Stand-ins for a sweep cell's training, run by ``sweep.execute.run_cells`` in spawned worker processes.

They live here, not in a test module, because a worker process imports them by name (``helpers`` is on the
path the workers inherit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FLAG = "first_reported"  # the file a test's ``done`` callback writes when it hears that 'first' finished


def wait_for_first(job) -> dict:
    """The job named ``first`` returns at once; any other waits (up to 30 s) for the flag file in its ``run_dir``
    that the parent writes on hearing ``first`` finished, and says whether it appeared."""
    saw = job.name == "first"
    deadline = time.monotonic() + 30
    while not saw and time.monotonic() < deadline:
        saw = (Path(job.run_dir) / FLAG).exists()
        time.sleep(0.05)
    return {"name": job.name, "saw": saw, "pid": os.getpid()}


def fail_on(job) -> dict:
    """Raise for the job named ``bad``; return at once for any other."""
    if job.name == "bad":
        from pathsegdiff.errors import InputError

        raise InputError(f"{job.run_dir}: cell {job.name} refused")
    return {"name": job.name, "pid": os.getpid()}
