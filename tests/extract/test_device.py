"""The CUDA path of the loop (docs/gpu-checklist.md): pinned non-blocking copies, finiteness on the device.

Skipped without a CUDA device; run on a GPU machine with
``pytest -m gpu tests/extract/test_device.py``.  The CPU path that CI runs is
covered by test_job.py and test_features.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pathsegdiff.extract.featurize import FeatureConfig, Featurizer
from pathsegdiff.extract.run.loop import DeviceToHost

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TILES = Path(__file__).parents[1] / "data" / "he_tiles"


def test_pinned_copies_on_a_side_stream_hold_the_data_once_waited_for():
    device = torch.device("cuda")
    xs = [torch.randn(8, 64, 32, 32, device=device).half(), torch.rand(8, device=device) > 0.5]
    expect = [x.cpu() for x in xs]
    host, wait = DeviceToHost(device).start(xs)
    del xs  # the device memory may be freed: record_stream keeps it until the copy is done
    torch.cuda.synchronize()
    wait()
    assert all(h.is_pinned() for h in host)
    assert all(torch.equal(h, e) for h, e in zip(host, expect))


def test_featurizer_on_cuda_checks_finiteness_there_and_matches_the_cpu(tiny, tiles):
    rgb, ids = tiles
    cfg = FeatureConfig(blocks=("up1", "up2"), timesteps=(50,))
    cpu = Featurizer(tiny, cfg)(rgb[:4], ids[:4], out_dtype=torch.float32)
    gpu_model = Featurizer.load("tiny", cfg=cfg, device="cuda")
    out = gpu_model(rgb[:4], ids[:4], out_dtype=torch.float16)
    assert out.finite is not None and all(bool(v.all()) for d in out.finite.values() for v in d.values())
    for b in ("up1", "up2"):
        x = out.features[50][b]
        assert x.is_cuda and x.is_contiguous() and x.dtype == torch.float16
        ref = cpu.features[50][b]
        assert float((x.float().cpu() - ref).abs().max() / ref.abs().max()) < 1e-2  # TF32 and float16 rounding


def test_extraction_on_cuda_writes_the_store_the_cpu_writes(tmp_path):
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store import open_store
    from pathsegdiff.tiles.datasets import SourceConfig, open_source

    source = open_source(TILES, SourceConfig(tile_size=64, stride=32))
    stores = {}
    for device in ("cpu", "cuda"):
        stores[device] = tmp_path / f"{device}.zarr"
        summary = run_extraction(source, stores[device], ExtractConfig(device=device, batch_size=7),
                                 progress=False, echo=lambda line: None)
        assert summary.written == len(source)
    a, b = open_store(stores["cpu"]), open_store(stores["cuda"])
    for i in range(len(source)):
        ta, tb = a.read_tile(i), b.read_tile(i)
        for t, blocks in ta.features.items():
            for name, x in blocks.items():
                y = tb.features[t][name].astype(np.float32)
                assert np.abs(y - x).max() / np.abs(x).max() < 1e-2, (i, t, name)
        assert np.array_equal(ta.rgb, tb.rgb)


def test_a_compact_extraction_on_cuda_encodes_on_the_gpu_and_matches_the_cpu(tmp_path, monkeypatch):
    """int8 on CUDA: the loop encodes on the device (device_encoding.py) and the writer takes the codes."""
    from pathsegdiff.extract import device_encoding
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store import open_store
    from pathsegdiff.tiles.datasets import SourceConfig, open_source

    calls = []
    encode = device_encoding.DeviceEncoder.__call__
    monkeypatch.setattr(device_encoding.DeviceEncoder, "__call__",
                        lambda self, f: calls.append(next(iter(next(iter(f.values())).values())).device) or encode(self, f))
    source = open_source(TILES, SourceConfig(tile_size=64, stride=32))
    stores = {}
    for device in ("cpu", "cuda"):
        stores[device] = tmp_path / f"{device}.zarr"
        run_extraction(source, stores[device], ExtractConfig(device=device, batch_size=7, compact="int8"),
                       progress=False, echo=lambda line: None)
    assert calls and all(d.type == "cuda" for d in calls)  # only the CUDA run encoded on the device
    a, b = open_store(stores["cpu"]), open_store(stores["cuda"])
    for i in range(len(source)):
        ta, tb = a.read_tile(i), b.read_tile(i)
        for t, blocks in ta.features.items():
            for name, x in blocks.items():
                assert np.abs(tb.features[t][name] - x).max() / np.abs(x).max() < 2e-2, (i, t, name)
