"""A writer SIGKILLed mid-batch leaves a store that opens, reports missing tiles, verifies, and resumes."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from helpers import children
from helpers.stores import store_bytes
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.verify import verify_store


def run_writer(path, kill_at=0, batch=4, phase="write"):
    return subprocess.run(children.command("kill_writer", path, kill_at, batch, phase), env=children.env(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    r = run_writer(path)
    assert r.returncode == 0, r.stderr
    return store_bytes(path)


# A batch of 4 tiles writes 7 arrays x 4 chunk objects, then the status chunk:
# 29 object writes.  The kill points land inside the first batch, on its status
# write, on the first chunk of the second batch, inside it, and inside the third.
PER_BATCH = 29


@pytest.mark.parametrize("kill_at", [5, 29, 30, 45, 70])
def test_sigkill_mid_batch_then_resume(tmp_path, reference, kill_at):
    path = tmp_path / "s.zarr"
    r = run_writer(path, kill_at=kill_at)
    assert r.returncode == -9, (r.returncode, r.stderr)

    fs = open_store(path)
    written = set(fs.written().tolist())
    # Batches are 4 tiles; a batch is written only when its status write landed.
    assert written == set(range(4 * ((kill_at - 1) // PER_BATCH)))  # the kill stops write number kill_at
    assert list(np.flatnonzero(fs.status() == 0)) == sorted(set(range(12)) - written)
    rep = verify_store(path)
    assert rep.ok, rep.lines()
    assert rep.n_checked == len(written)

    # The lock left by the killed writer is stale and is taken over by the resume.
    r = run_writer(path)
    assert r.returncode == 0, r.stderr
    assert store_bytes(path) == reference


def test_sigkill_during_creation_then_rerun(tmp_path, reference):
    path = tmp_path / "s.zarr"
    r = run_writer(path, kill_at=3, phase="create")  # mid tile table
    assert r.returncode == -9
    from pathsegdiff.errors import NotAStoreError

    with pytest.raises(NotAStoreError, match="interrupted"):
        open_store(path)
    r = run_writer(path)  # an interrupted creation holds no tile data: it is redone
    assert r.returncode == 0, r.stderr
    assert store_bytes(path) == reference
