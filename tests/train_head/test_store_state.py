"""Training on a store still being written says so, refuses an empty evaluated split, and refuses unlabelled tiles."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.store import create_store

runner = CliRunner()
ARGS = ["--head", "linear", "--epochs", "1", "--quiet"]


def _store(path, written):
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(written, synth.tile_batch(written))
    return path


def test_a_store_without_its_test_tiles_is_refused_unless_asked(tmp_path):
    train_only = [i for i in range(synth.N_TILES) if i % 3 == 0]  # synth.records: split = (train, val, test)[i % 3]
    store = _store(tmp_path / "s.zarr", train_only)
    r = runner.invoke(app, ["train", str(store), "-o", str(tmp_path / "run"), *ARGS])
    assert r.exit_code == 1 and "none of its 4 test tiles is written yet (4 of 12 tiles)" in r.output, r.output
    assert "--allow-partial" in r.output and not (tmp_path / "run").exists()
    r = runner.invoke(app, ["train", str(store), "-o", str(tmp_path / "run"), *ARGS, "--allow-partial"])
    assert r.exit_code == 0, r.output
    assert "4 of 12 tiles written" in r.output and "store partly written: 4 of 12 tiles" in r.output


def test_a_partly_written_store_is_said_and_recorded(tmp_path):
    store = _store(tmp_path / "s.zarr", list(range(9)))  # tiles 9..11 still todo
    r = runner.invoke(app, ["train", str(store), "-o", str(tmp_path / "run"), *ARGS])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "9 of 12 tiles written" in r.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["store_tiles"] == {"written": 9, "total": 12}
    assert "store partly written: 9 of 12 tiles" in (tmp_path / "run" / "summary.md").read_text()
    whole = _store(tmp_path / "w.zarr", list(range(synth.N_TILES)))
    r = runner.invoke(app, ["train", str(whole), "-o", str(tmp_path / "run2"), *ARGS])
    assert r.exit_code == 0 and "warning:" not in r.output and "store partly written" not in r.output, r.output


def test_training_tiles_without_a_labelled_pixel_are_refused(tmp_path):
    sch = synth.schema()
    batch = synth.tile_batch(range(synth.N_TILES))
    batch.labels[:] = sch.ignore_index
    with create_store(tmp_path / "s.zarr", sch, synth.records()) as w:
        w.write(range(synth.N_TILES), batch)
    r = runner.invoke(app, ["train", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "run"), *ARGS])
    assert r.exit_code == 1 and "holds a labelled pixel" in r.output, r.output
    assert not (tmp_path / "run").exists() and np.all(batch.labels == sch.ignore_index)
