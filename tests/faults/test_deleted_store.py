"""A store deleted while a reader has it open: reads raise a clear error, never fill values passed off as data."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.errors import StoreNotFoundError
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.copy import copy_store


@pytest.fixture
def store(tmp_path):
    return synth.written_store(tmp_path / "s.zarr", 8)


def test_directory_deleted_while_open(store):
    fs = open_store(store)
    fs.read_tile(0)  # arrays and their metadata are now cached
    worker_copy = pickle.loads(pickle.dumps(fs))  # as a DataLoader worker holds it
    shutil.rmtree(store)
    gone = r"the store is gone \(deleted or moved while it was open\)|no such store"
    # Every read the trainer and predict make (train_head/data.py, predict/run.py) ...
    for read in (lambda: fs.read_tile(1), lambda: fs.read_features(2, 50, "up1"), lambda: fs.read_labels(3),
                 lambda: fs.read_rgb(4), lambda: fs.status(), lambda: fs.written(),
                 lambda: worker_copy.read_tile(5)):
        with pytest.raises(StoreNotFoundError, match=gone) as err:  # ... names the store
            read()
        assert str(store) in str(err.value)
    r = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert r.exit_code == 1 and "no such store" in r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # one error line, no traceback


def test_directory_deleted_before_first_read(store):
    fs = open_store(store)  # only the root attributes were read
    shutil.rmtree(store)
    with pytest.raises(StoreNotFoundError, match=str(store)):
        fs.read_labels(0)


def test_zip_deleted_while_open_keeps_reading_the_same_bytes(store, tmp_path):
    """An open zip's file handle outlives the unlink on POSIX: reads go on and return the written values."""
    packed = tmp_path / "s.zip"
    copy_store(store, packed)
    fs = open_store(packed)
    before = fs.read_tile(6)
    packed.unlink()
    after = fs.read_tile(6)
    assert np.array_equal(before.labels, after.labels)
    assert np.array_equal(before.features[150]["up2"], after.features[150]["up2"])
    assert np.array_equal(after.labels, synth.tile_batch([6]).labels[0])
