"""Appends with another identity are refused; one writer at a time; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import synth
from helpers.stores import store_bytes
from pathsegdiff.errors import IdentityMismatchError, StoreExistsError, StoreLockedError
from pathsegdiff.store import open_or_create, open_store, open_writer
from pathsegdiff.store.schema import LOCK_NAME


@pytest.fixture
def store(tmp_path):
    return synth.written_store(tmp_path / "s.zarr", 3)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"timesteps": (50, 250)}, "timesteps"),
        ({"weights_sha256": "f" * 64}, "weights_sha256"),
        ({"noise_seed": 7}, "noise_seed"),
        ({"conditioning": "hipt:abc"}, "conditioning"),
        ({"tile_size": 64}, "tile_size"),
        ({"draws": 4}, "draws"),
        ({"codec": "bitround7-zstd"}, "codec"),
    ],
)
def test_append_with_other_identity_is_refused_and_store_unchanged(store, change, field):
    before = store_bytes(store)
    assert synth.spec(**change).identity() != synth.spec().identity()
    with pytest.raises(IdentityMismatchError, match=field) as e:
        open_or_create(store, synth.schema(**change), synth.records())
    assert field in e.value.differing
    assert str(store) in str(e.value)
    assert store_bytes(store) == before
    assert not (store / LOCK_NAME).exists()


def test_block_selection_changes_identity(store):
    from pathsegdiff.store import BlockSpec

    other = synth.spec(blocks=(BlockSpec("up1", 6, 8, 8),))
    with pytest.raises(IdentityMismatchError, match="blocks"):
        open_writer(store, expect=other)


def test_lossless_codec_change_keeps_identity():
    assert synth.spec(codec="lz4").identity() == synth.spec(codec="none").identity()


def test_create_over_existing_store_needs_overwrite(store):
    from pathsegdiff.store import create_store

    with pytest.raises(StoreExistsError, match="--overwrite"):
        create_store(store, synth.schema(), synth.records())
    with create_store(store, synth.schema(), synth.records(), overwrite=True) as w:
        assert len(w.missing()) == synth.N_TILES


def test_refuses_to_delete_a_foreign_directory(tmp_path):
    from pathsegdiff.errors import NotAStoreError
    from pathsegdiff.store import create_store

    d = tmp_path / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(NotAStoreError, match="not a pathsegdiff store"):
        create_store(d, synth.schema(), synth.records(), overwrite=True)
    assert (d / "holiday.jpg").exists()


def test_second_writer_is_refused_but_reading_is_allowed(store):
    with open_writer(store) as w:
        owner = json.loads((store / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            open_writer(store)
        assert len(open_store(store).written()) == 3
        w.write([5], synth.tile_batch([5]))
    assert not (store / LOCK_NAME).exists()
    assert 5 in open_store(store).written()


def test_stale_lock_of_dead_process_is_taken_over(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (store / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "then"}))
    with open_writer(store):
        assert json.loads((store / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_lock_from_another_host_is_refused_with_owner_named(store):
    (store / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "since": "then"}))
    with pytest.raises(StoreLockedError, match="gpu-node-7"):
        open_writer(store)


def test_two_writers_at_once_exactly_one_wins(store):
    code = (
        "import sys, time\n"
        "from pathsegdiff.store import open_writer\n"
        "from pathsegdiff.errors import StoreLockedError\n"
        "t0 = float(sys.argv[2])\n"
        "while time.time() < t0: pass\n"
        "try:\n"
        "    w = open_writer(sys.argv[1]); print('won'); sys.stdout.flush(); time.sleep(1.5); w.close()\n"
        "except StoreLockedError:\n"
        "    print('refused')\n"
    )
    import time

    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store), str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused", "won"]
