"""Disk full while writing: a clear error, a store that still opens and verifies, and a resume that completes it.

A full disk is simulated with RLIMIT_FSIZE in a child process (SIGXFSZ ignored,
so writes past the limit fail with EFBIG as they would with ENOSPC).  The
limits are picked from the sizes of this store's objects: feature chunks of
``up2`` are 2052 bytes and RGB chunks 3092, the status chunk 4100 and the root
``zarr.json`` about 2 KB.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import children
from helpers.stores import store_bytes
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.verify import verify_store


def run_writer(path: Path, limit: int = 0, batch: int = 4, limit_from: int = 0) -> tuple[int, dict, str]:
    r = subprocess.run(children.command("fsize_writer", path, limit, batch, limit_from), env=children.env(),
                       capture_output=True, text=True, timeout=120)
    lines = r.stdout.strip().splitlines()
    assert lines, r.stderr
    return r.returncode, json.loads(lines[-1]), r.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    code, out, err = run_writer(path)
    assert code == 0 and out["ok"], err
    return store_bytes(path)


CASES = {
    # name: (limit in bytes, first limited batch, tiles written before the limit)
    "feature-chunks-too-big": (1024, 1, set(range(4))),
    "only-the-status-chunk-too-big": (4096, 2, set(range(8))),
    "from-the-first-batch": (1024, 0, set()),
}


@pytest.mark.parametrize("case", CASES)
def test_disk_full_mid_extraction_then_resume(tmp_path, reference, case):
    limit, limit_from, expect_written = CASES[case]
    path = tmp_path / "s.zarr"
    code, out, err = run_writer(path, limit=limit, limit_from=limit_from)

    # One clear error naming the store and the limit, raised as a store error (also an OSError).
    assert code == 3, (code, out, err)
    assert "Traceback" not in err
    assert out["error"] == "StoreWriteError" and "OSError" in out["bases"]
    assert str(path) in out["message"] and "file size limit exceeded" in out["message"]
    assert "resume" in out["message"]

    # What the store says is written is there and verifies; nothing half-written is left behind.
    fs = open_store(path)
    assert set(fs.written().tolist()) == expect_written
    rep = verify_store(path)
    assert rep.ok, rep.lines()
    assert rep.n_checked == len(expect_written)
    assert not [p for p in path.rglob("*") if p.name.endswith(".partial")]
    if case == "only-the-status-chunk-too-big":  # the batch's chunks landed; only its status write failed
        assert (path / "features/t150/up2/c.8.0.0.0").is_file() and (path / "rgb/c.11.0.0.0").is_file()

    # After space is freed, a rerun resumes and ends with the bytes of an uninterrupted run.
    code, out, err = run_writer(path)
    assert code == 0 and out["ok"], err
    assert store_bytes(path) == reference


def test_disk_full_while_creating_the_store_then_rerun(tmp_path, reference):
    path = tmp_path / "s.zarr"
    code, out, err = run_writer(path, limit=1024, limit_from=-1)  # the root zarr.json alone is ~2 KB
    assert code == 3, (code, out, err)
    assert out["error"] == "StoreWriteError"
    assert str(path) in out["message"] and "file size limit exceeded" in out["message"]
    code, out, err = run_writer(path)
    assert code == 0 and out["ok"], err
    assert store_bytes(path) == reference
