"""A read-only store: reading works, every kind of write is refused with one clear error, nothing changes.

Tests run as root here, and root ignores permission bits.  The directory case
therefore runs in a child that drops CAP_DAC_OVERRIDE (see helpers/readonly_child.py),
which makes ``chmod -R a-w`` binding for root as for any user.  Where that is
not possible (not Linux) it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import children, synth
from helpers.stores import store_bytes
from pathsegdiff.errors import StoreReadOnlyError
from pathsegdiff.store import create_store, open_or_create, open_store, open_writer
from pathsegdiff.store.commands.copy import copy_store


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "ro" / "s.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(5), synth.tile_batch(range(5)))
    return path


def chmod_tree(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        os.chmod(p, (mode | stat.S_IWUSR) if writable else (mode & ~bits))


@pytest.mark.skipif(sys.platform != "linux", reason="drops Linux capabilities to make permission bits bind root")
def test_read_only_directory_reads_and_refuses_writes(store):
    before = store_bytes(store)
    chmod_tree(store.parent, writable=False)
    try:
        r = subprocess.run(children.command("readonly_child", store), env=children.env(), capture_output=True,
                           text=True, timeout=120)
    finally:
        chmod_tree(store.parent, writable=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["can_write_anyway"] is False  # the child really is held to the permission bits

    assert res["read"]["ok"] and res["read"]["value"][0] == [0, 1, 2, 3, 4]
    assert res["verify"] == {"ok": True, "value": True}
    for op in ("resume", "open_writer", "overwrite", "create_beside"):
        assert res[op]["ok"] is False, (op, res[op])
        assert res[op]["error"] == "StoreReadOnlyError", (op, res[op])
        assert "permission denied" in res[op]["message"] and str(store.parent) in res[op]["message"], res[op]
    assert res["cli_info"]["uncaught"] is None and res["cli_verify"]["uncaught"] is None
    assert res["cli_info"]["code"] == 0 and "5/12 written" in res["cli_info"]["output"]
    assert res["cli_verify"]["code"] == 0
    copy = res["cli_copy_into"]
    assert copy["code"] == 1 and copy["uncaught"] is None, copy
    assert [ln for ln in copy["output"].splitlines() if ln.startswith("error:")][0].count("permission denied") == 1
    assert store_bytes(store) == before
    assert not (store.parent / "new.zarr").exists() and not (store.parent / "copy.zarr").exists()


def test_packed_zip_reads_and_refuses_writes(store, tmp_path):
    packed = tmp_path / "s.zip"
    copy_store(store, packed)
    os.chmod(packed, 0o444)
    digest = packed.read_bytes()
    fs = open_store(packed)
    assert fs.written().tolist() == [0, 1, 2, 3, 4]
    assert fs.read_tile(4).labels.shape == (synth.TILE, synth.TILE)
    for write in (lambda: open_writer(packed), lambda: open_or_create(packed, synth.schema(), synth.records()),
                  lambda: create_store(tmp_path / "new.zip", synth.schema(), synth.records())):
        with pytest.raises(StoreReadOnlyError, match=r"\.zip.*(read-only|pack it)"):
            write()
    assert packed.read_bytes() == digest and not (tmp_path / "new.zip").exists()
