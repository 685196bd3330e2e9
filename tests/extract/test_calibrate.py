"""The calibration pass of a PCA extraction: tiles spread over slides, computed once, replayed unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathsegdiff.extract.run.calibrate import BatchRecorder, calibrate
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.describe import build_schema, load_featurizer
from pathsegdiff.extract.run.loop import extract_tiles
from pathsegdiff.store import create_store, open_store
from pathsegdiff.store.encodings import Calibration
from pathsegdiff.tiles.datasets import SourceConfig, open_source

TILES = Path(__file__).parents[1] / "data" / "he_tiles"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tiny):
    source = open_source(TILES, SourceConfig(tile_size=64, stride=32))
    cfg = ExtractConfig(batch_size=4)
    featurizer = load_featurizer(cfg, backbone=tiny)
    return source, cfg, featurizer, build_schema(source, featurizer, cfg)


def test_calibration_tiles_spread_over_slides_and_fit_a_basis_per_block(setup):
    source, cfg, featurizer, schema = setup
    summary = ExtractSummary("s", len(source))
    bases, recorder = calibrate(source, featurizer, cfg, schema, 8, Calibration(tiles=6, seed=1), summary)
    done = [i for idx, _, _ in recorder.batches for i in idx]
    assert len(done) == 6 == summary.written
    assert len({source.records[i].slide_id for i in done}) == min(6, len({r.slide_id for r in source.records}))
    spec = schema.features
    assert sorted(bases) == sorted((t, b.name) for t in spec.timesteps for b in spec.blocks)
    for (t, b), basis in bases.items():
        assert basis.components.shape == (8, spec.block(b).channels)
    again, _ = calibrate(source, featurizer, cfg, schema, 8, Calibration(tiles=6, seed=1), ExtractSummary("s", 1))
    assert all(again[k].sha256() == bases[k].sha256() for k in bases)


def test_replayed_batches_equal_a_direct_extraction(setup, tmp_path):
    source, cfg, featurizer, schema = setup
    todo = np.array([0, 5, 9, 30])
    recorder = BatchRecorder(schema, [r.tile_id for r in source.records])
    extract_tiles(source, todo, recorder, featurizer, cfg, ExtractSummary("s", len(source)))
    stores = []
    for name, fill in (("direct", None), ("replayed", recorder)):
        with create_store(tmp_path / f"{name}.zarr", schema, source.records) as w:
            if fill is None:
                extract_tiles(source, todo, w, featurizer, cfg, ExtractSummary("s", len(source)))
            else:
                fill.replay(w)
        stores.append(open_store(tmp_path / f"{name}.zarr"))
    a, b = stores
    assert list(a.written()) == list(b.written()) == list(todo)
    for i in todo:
        ta, tb = a.read_tile(int(i)), b.read_tile(int(i))
        for t in ta.features:
            for blk in ta.features[t]:
                assert ta.features[t][blk].tobytes() == tb.features[t][blk].tobytes()
        assert ta.labels.tobytes() == tb.labels.tobytes() and ta.rgb.tobytes() == tb.rgb.tobytes()
