"""Compact encoding in torch (what a GPU run does before the copy) against the store's numpy encoder.

Runs on the CPU: the same arithmetic, in torch.  Codes may differ by one
step where a value sits on a rounding boundary (summation order), never more;
the writer takes the encoded arrays instead of features and checks them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import synth  # the store tests' small stores
from pathsegdiff.errors import SchemaError
from pathsegdiff.extract.device_encoding import DeviceEncoder
from pathsegdiff.extract.run.loop import device_encoder
from pathsegdiff.store import create_store, open_store
from pathsegdiff.store import schema as S
from pathsegdiff.store.encoded import StoreEncoding
from pathsegdiff.store.encodings import Calibration, bases_sha256, fit_bases, parse_preset

PRESETS = ("int8", "pca4", "pca4-int8")


def without_features(tiles):
    """The rest of a tile batch (labels, RGB, SSL): the features come encoded."""
    return replace(synth.tile_batch(tiles), features={})


def features(tiles=range(synth.N_TILES)):
    """synth's features, made rank 3 over channels (as correlated UNet channels are), float16 as stored."""
    batch = synth.tile_batch(tiles)
    for t, per in batch.features.items():
        for b, x in per.items():
            mix = np.random.default_rng([t, x.shape[1]]).normal(size=(x.shape[1], 3))
            per[b] = np.einsum("cr,nrhw->nchw", mix, x[:, :3]).astype(np.float16)
    return batch


def encoding_for(preset: str) -> tuple[StoreEncoding, dict | None]:
    enc = parse_preset(preset)
    bases = None
    if enc.uses_pca:
        f = features(range(6)).features
        bases = fit_bases({(t, b): x for t, d in f.items() for b, x in d.items()}, enc.components, Calibration())
    spec = synth.schema(encoding=preset, basis_sha256=bases_sha256(bases) if bases else "").features
    return StoreEncoding(spec, bases), bases


@pytest.mark.parametrize("preset", PRESETS)
def test_torch_encoding_equals_numpy_within_one_step(preset):
    encoding, _ = encoding_for(preset)
    batch = features()
    host = encoding.encode({S.feature_path(t, b): x for t, d in batch.features.items() for b, x in d.items()})
    dev = DeviceEncoder(encoding, "cpu")({t: {b: torch.from_numpy(x) for b, x in d.items()}
                                          for t, d in batch.features.items()})
    assert set(dev) == set(host)
    for name, want in host.items():
        got = dev[name].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if want.dtype == np.int8:
            diff = np.abs(got.astype(int) - want.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (name, diff.max(), (diff == 0).mean())
        else:
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=1e-4,
                                       err_msg=name)


def test_the_writer_takes_encoded_arrays_and_reads_them_back_decoded(tmp_path):
    encoding, bases = encoding_for("pca4-int8")
    batch = features()
    schema = synth.schema(encoding="pca4-int8", basis_sha256=bases_sha256(bases))
    host = create_store(tmp_path / "host.zarr", schema, synth.records(), bases=bases)
    with host:
        host.write(range(synth.N_TILES), batch)
    dev = DeviceEncoder(encoding, "cpu")({t: {b: torch.from_numpy(x) for b, x in d.items()}
                                          for t, d in batch.features.items()})
    with create_store(tmp_path / "dev.zarr", schema, synth.records(), bases=bases) as w:
        w.write(range(synth.N_TILES), without_features(range(synth.N_TILES)),
                encoded={k: v.numpy() for k, v in dev.items()})
    a, b = open_store(tmp_path / "host.zarr"), open_store(tmp_path / "dev.zarr")
    assert len(b.written()) == synth.N_TILES
    for i in (0, synth.N_TILES - 1):
        ta, tb = a.read_tile(i), b.read_tile(i)
        np.testing.assert_array_equal(ta.labels, tb.labels)
        for t in a.timesteps:
            for blk in a.blocks:
                x, y = ta.features[t][blk], tb.features[t][blk]
                step = np.abs(x).max() * 2 / 255  # one quantisation step of the coefficients, projected back
                assert np.abs(x - y).max() <= 4 * step, (i, t, blk)


def test_encoded_arrays_that_do_not_fit_are_refused_and_nothing_is_written(tmp_path):
    encoding, bases = encoding_for("int8")
    schema = synth.schema(encoding="int8")
    batch = features(range(2))
    dev = {k: v.numpy() for k, v in DeviceEncoder(encoding, "cpu")(
        {t: {b: torch.from_numpy(x) for b, x in d.items()} for t, d in batch.features.items()}).items()}
    some = next(n for n in dev if n.endswith(".scale_offset"))
    bad_cases = {
        "dtype": ({**dev, some.removesuffix(".scale_offset"): dev[some.removesuffix(".scale_offset")].astype(np.int16)},
                  "expected int8"),
        "missing": ({k: v for k, v in dev.items() if k != some}, "takes"),
        "nan": ({**dev, some: np.where(np.arange(dev[some].size).reshape(dev[some].shape) == 0, np.nan,
                                       dev[some]).astype(np.float32)}, "non-finite"),
    }
    with create_store(tmp_path / "s.zarr", schema, synth.records()) as w:
        for what, (arrays, message) in bad_cases.items():
            with pytest.raises(SchemaError, match=message):
                w.write(range(2), without_features(range(2)), encoded=arrays)
        assert not (w.status() != 0).any()  # every tile still todo
    with create_store(tmp_path / "f16.zarr", synth.schema(), synth.records()) as w:  # a float16 store takes features
        with pytest.raises(SchemaError, match="features, not encoded arrays"):
            w.write(range(2), without_features(range(2)), encoded=dev)


def test_only_cuda_encodes_on_the_device(tmp_path):
    encoding, _ = encoding_for("int8")
    with create_store(tmp_path / "s.zarr", synth.schema(encoding="int8"), synth.records()) as w:
        assert device_encoder(w, torch.device("cpu")) is None  # the CPU path keeps the numpy encoder (bit-identical)
        assert isinstance(device_encoder(w, torch.device("cuda")), DeviceEncoder)  # int8 has no basis to move: no GPU touched
    with create_store(tmp_path / "f.zarr", synth.schema(), synth.records()) as w:
        assert device_encoder(w, torch.device("cuda")) is None


def test_coefficients_that_overflow_on_the_device_get_the_same_refusal(tmp_path):
    encoding, bases = encoding_for("pca4")
    batch = features(range(2))
    x = batch.features[50]["up1"].astype(np.float32)
    batch.features[50]["up1"] = x / np.abs(x).max() * 60000  # features within float16, coefficients beyond it
    dev = DeviceEncoder(encoding, "cpu")({t: {b: torch.from_numpy(x) for b, x in d.items()}
                                          for t, d in batch.features.items()})
    schema = synth.schema(encoding="pca4", basis_sha256=bases_sha256(bases))
    with create_store(tmp_path / "s.zarr", schema, synth.records(), bases=bases) as w:
        with pytest.raises(SchemaError, match="non-finite PCA coefficients .* overflow float16; a pca4-int8 store"):
            w.write(range(2), without_features(range(2)), encoded={k: v.numpy() for k, v in dev.items()})
