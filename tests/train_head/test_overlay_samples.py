"""overlays.png shows tiles that hold labels, not the first tiles whatever they are (empty glass)."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.store import create_store
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.evaluate import evaluate_head


def test_example_tiles_are_the_ones_with_several_labelled_classes(tmp_path):
    sch = synth.schema()
    batch = synth.tile_batch(range(synth.N_TILES))
    batch.labels[:6] = 0  # the first six tiles: one class only (glass, say)
    with create_store(tmp_path / "s.zarr", sch, synth.records()) as w:
        w.write(range(synth.N_TILES), batch)
    r = CliRunner().invoke(app, ["train", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "run"), "--head", "linear",
                                 "--epochs", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    head, meta = load_head(tmp_path / "run")
    ev = evaluate_head(head, meta, str(tmp_path / "s.zarr"), np.arange(synth.N_TILES), keep_samples=3)
    assert [s["index"] for s in ev.samples] == [6, 7, 8]
    few = evaluate_head(head, meta, str(tmp_path / "s.zarr"), np.arange(8), keep_samples=3)
    assert [s["index"] for s in few.samples] == [6, 7, 0]  # filled up with the plain ones when too few
