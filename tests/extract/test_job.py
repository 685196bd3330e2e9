"""`pathsegdiff extract` end to end on real H&E tiles with the tiny model."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from helpers.he_tiles import ARGS, TILES, extract
from helpers.sigkill import run_then_sigkill
from helpers.stores import data_bytes
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.verify import verify_store

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_fills_a_store_that_verifies_with_the_models_shapes(reference):
    assert verify_store(reference).ok
    fs = open_store(reference)
    assert len(fs.written()) == fs.n_tiles == 36
    shapes = Featurizer.load("tiny").block_shapes(64)
    assert {b.name: b.shape for b in fs.schema.features.blocks} == shapes
    tile = fs.read_tile(5)
    for t in (50, 150):
        for b, shape in shapes.items():
            assert tile.features[t][b].shape == shape and tile.features[t][b].dtype == np.float16
    assert tile.labels.shape == (64, 64) and set(np.unique(tile.labels)) <= {0, 1}
    assert fs.schema.class_names == ("background", "nuclei")
    assert fs.provenance["model_id"] == "tiny-v1"
    assert fs.record(5).tile_id.startswith(("histo_", "target_image_"))


def test_batch_size_does_not_change_a_bit(reference, tmp_path):
    code, output = extract(TILES, tmp_path / "b1.zarr", "--batch-size", "1")
    assert code == 0, output
    assert data_bytes(tmp_path / "b1.zarr") == data_bytes(reference)


def test_sigkill_then_resume_gives_the_same_store(reference, tmp_path):
    out = tmp_path / "k.zarr"
    cmd = [sys.executable, "-m", "pathsegdiff.cli", "extract", str(TILES), "-o", str(out), *ARGS, "--batch-size", "4"]
    proc = run_then_sigkill(cmd, out, written=8)  # once some, not all, tiles are written
    assert proc.returncode == -9, "the run ended before it could be killed"
    fs = open_store(out)
    assert 0 < len(fs.written()) < 36
    assert verify_store(out).ok
    code, output = extract(TILES, out, "--batch-size", "5")
    assert code == 0, output
    assert "already written" in output
    assert data_bytes(out) == data_bytes(reference)


def test_other_selection_changes_identity_and_is_refused(reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    before = data_bytes(out)
    for extra, field in ((["--timesteps", "50"], "timesteps"), (["--blocks", "up1"], "blocks"),
                         (["--seed", "3"], "noise_seed"), (["--dtype", "bf16"], "compute_dtype")):
        code, output = extract(TILES, out, *extra)
        assert code == 1 and field in output and str(out) in output
    assert data_bytes(out) == before
    assert open_store(out).identity == open_store(reference).identity


def test_unreadable_tile_stops_or_is_skipped(tmp_path):
    src = tmp_path / "tiles"
    shutil.copytree(TILES, src)
    bad = src / "images" / "target_image_x400_y300.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # header intact, pixels truncated
    code, output = extract(src, tmp_path / "a.zarr", "--batch-size", "4")
    assert code == 1 and "target_image_x400_y300.png" in output and "--skip-errors" in output
    kept = open_store(tmp_path / "a.zarr")
    assert verify_store(tmp_path / "a.zarr").ok  # what was written before the stop is intact
    assert len(kept.written()) < 36
    code, output = extract(src, tmp_path / "b.zarr", "--skip-errors")
    assert code == 0, output
    fs = open_store(tmp_path / "b.zarr")
    failed = fs.fail_reasons()
    assert len(failed) == 6 and all(t.startswith("target_image_x400_y300") for t in failed)
    assert len(fs.written()) == 30
    assert (tmp_path / "b.zarr.errors.log").read_text().count("\n") == 6
    assert "skipped target_image_x400_y300" in output


def test_bad_options_fail_before_any_work(tmp_path):
    code, output = extract(TILES, tmp_path / "s.zarr", "--blocks", "up9")
    assert code == 1 and "up9" in output and "up1" in output  # names the valid blocks
    code, output = extract(TILES, tmp_path / "s.zarr", "--model", tmp_path / "no-such-model")
    assert code == 1 and "no-such-model" in output
    code, output = extract(tmp_path / "nothing", tmp_path / "s.zarr")
    assert code == 1 and "nothing" in output
    code, output = extract(TILES, tmp_path / "s.zarr", "--dtype", "fp8")
    assert code == 1 and "fp8" in output
    assert not (tmp_path / "s.zarr").exists()


class _InterruptedSource:
    """The he_tiles folder, but Ctrl-C arrives while decoding tile ``at``."""

    def __init__(self, at: int):
        from pathsegdiff.tiles.datasets import SourceConfig, open_source

        self.inner, self.at = open_source(TILES, SourceConfig(tile_size=64, stride=32)), at
        self.records, self.tile_size = self.inner.records, 64
        self.class_names, self.has_instances = self.inner.class_names, False

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int):
        if i == self.at:
            raise KeyboardInterrupt
        return self.inner.load(i)

    def describe(self) -> dict:
        return {"kind": "interrupted"}


def test_ctrl_c_finishes_computed_batches_and_leaves_no_lock(tiny, reference, tmp_path):
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store.schema import LOCK_NAME

    out = tmp_path / "c.zarr"
    cfg = ExtractConfig(batch_size=4, decode_workers=0)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(_InterruptedSource(at=10), out, cfg, progress=False, echo=lambda line: None, backbone=tiny)
    assert not (out / LOCK_NAME).exists()
    fs = open_store(out)
    assert list(fs.written()) == list(range(8))  # the two batches computed before tile 10 were written
    assert verify_store(out).ok
    code, output = extract(TILES, out, "--batch-size", "4")  # the CLI resumes the same store
    assert code == 0, output
    assert data_bytes(out) == data_bytes(reference)
