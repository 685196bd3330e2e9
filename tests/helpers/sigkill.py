"""Start an ``extract`` command line in a child process and SIGKILL it part-way (tests of resume after a kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from pathsegdiff.store import open_store


def run_then_sigkill(cmd: list[str], store, written: int, timeout: float = 120) -> subprocess.Popen:
    """Run ``cmd`` with one torch thread (as the tests' own process) and SIGKILL it once ``store`` holds at least
    ``written`` written tiles; returns the waited-for process (returncode -9 unless it ended first)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            done = len(open_store(store).written())
        except Exception:  # not created yet, or mid-creation
            done = 0
        if done >= written or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc
