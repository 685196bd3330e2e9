"""Compact encodings on arrays alone: presets by name, int8 and PCA round trips within their bounds,
per-tile results independent of the batch, a seeded basis and calibration sample."""

from __future__ import annotations

import numpy as np
import pytest

from pathsegdiff.errors import ConfigError, SchemaError
from pathsegdiff.store.encodings import (
    Calibration,
    Encoding,
    decode_block,
    encode_block,
    fit_pca,
    int8_error_bound,
    parse_preset,
    quantise_int8,
    dequantise_int8,
    relative_error,
    calibration_tiles,
)

PRESETS = ("float16", "int8", "pca8", "pca8-int8")


def feature_like(rng: np.random.Generator, n: int = 6, c: int = 24, hw: int = 16, rank: int = 6,
                 silu: bool = False) -> np.ndarray:
    """A rank-``rank`` channel mix of smooth fields plus a little noise (channels correlate, as in a UNet);
    ``silu``: through SiLU, skewed with many values near zero, as a UNet's activations are."""
    fields = rng.normal(size=(n, rank, hw, hw)).cumsum(-1).cumsum(-2) / hw
    mix = rng.normal(size=(c, rank))
    x = np.einsum("cr,nrhw->nchw", mix, fields) + 0.01 * rng.normal(size=(n, c, hw, hw))
    x = x * rng.lognormal(0, 0.5, size=(1, c, 1, 1))
    return (x / (1 + np.exp(-x)) if silu else x).astype(np.float32)


@pytest.mark.parametrize("name", PRESETS + ("pca64", "pca1-int8"))
def test_presets_parse_and_name_themselves(name):
    enc = parse_preset(name)
    assert enc.name == name and parse_preset(enc.name) == enc
    assert Encoding.from_dict(enc.to_dict()) == enc


@pytest.mark.parametrize("bad", ["int4", "pca", "pca0", "pca-8", "pca8-int4", "pca64int8", "float8"])
def test_unknown_presets_are_refused_with_the_choices(bad):
    with pytest.raises(ConfigError, match="pcaK-int8"):
        parse_preset(bad)


def test_bytes_per_tile_follow_the_preset():
    c, h, w = 384, 64, 64
    assert parse_preset("float16").stored_bytes(c, h, w) == 2 * c * h * w
    assert parse_preset("int8").stored_bytes(c, h, w) == c * h * w + 8 * c
    assert parse_preset("pca64").stored_bytes(c, h, w) == 2 * 64 * h * w
    assert parse_preset("pca64-int8").stored_bytes(c, h, w) == 64 * h * w + 8 * 64
    assert parse_preset("pca64").stored_channels(48) == 48  # K >= C keeps every channel


def test_int8_error_is_at_most_half_a_step(rng):
    x = feature_like(rng, silu=True)
    codes, quant = quantise_int8(x)
    assert codes.dtype == np.int8 and quant.shape == (x.shape[0], 2, x.shape[1]) and quant.dtype == np.float32
    err = np.abs(dequantise_int8(codes, quant) - x)
    bound = int8_error_bound(quant)[..., None, None] * (1 + 1e-5) + 1e-6 * np.abs(x).max()
    assert (err <= bound).all()
    assert codes.min() == -128 and codes.max() == 127  # the range is used in full


def test_int8_constant_channel_reads_back_exactly():
    x = np.full((2, 3, 4, 4), 1.25, np.float32)
    x[1, 2] = np.arange(16).reshape(4, 4)
    codes, quant = quantise_int8(x)
    y = dequantise_int8(codes, quant)
    assert (y[0] == 1.25).all() and (y[1, :2] == 1.25).all()
    assert np.abs(y[1, 2] - x[1, 2]).max() <= 15 / 255 / 2 + 1e-6


def test_int8_refuses_non_finite_values():
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 1, 0, 0] = np.nan
    with pytest.raises(SchemaError, match="inf or NaN"):
        quantise_int8(x)


def test_pca_reconstructs_low_rank_features_and_is_orthonormal(rng):
    x = feature_like(rng, rank=4)
    basis = fit_pca(x, 8)
    assert basis.components.shape == (8, 24) and basis.mean.shape == (24,)
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(8), atol=1e-5)
    assert np.all(np.diff(basis.explained) <= 1e-7) and 0.9 < basis.explained.sum() <= 1 + 1e-6
    assert relative_error(x, basis.reconstruct(basis.project(x))) < 0.05


def test_pca_with_k_at_least_c_keeps_every_channel(rng):
    x = feature_like(rng, c=6)
    basis = fit_pca(x, 64)
    assert basis.k == 6
    assert relative_error(x, basis.reconstruct(basis.project(x))) < 1e-5


def test_pca_fit_is_seeded_and_the_sample_matters(rng):
    x = feature_like(rng)
    cal = Calibration(pixels=500, seed=3)
    assert fit_pca(x, 8, cal).sha256() == fit_pca(x.copy(), 8, cal).sha256()
    assert fit_pca(x, 8, cal).sha256() != fit_pca(x, 8, Calibration(pixels=500, seed=4)).sha256()


@pytest.mark.parametrize("name", PRESETS)
def test_a_tile_encodes_to_the_same_bytes_in_any_batch(rng, name):
    x = feature_like(rng)
    enc = parse_preset(name)
    basis = fit_pca(x, enc.components) if enc.uses_pca else None
    whole = encode_block(x, enc, basis)
    for i in range(len(x)):
        alone = encode_block(x[i : i + 1], enc, basis)
        assert alone.values.tobytes() == whole.values[i : i + 1].tobytes()
        if enc.int8:
            assert alone.quant.tobytes() == whole.quant[i : i + 1].tobytes()


# Relative reconstruction error each preset must stay within on the feature-like data above.
BOUNDS = {"float16": 1e-3, "int8": 0.01, "pca8": 0.01, "pca8-int8": 0.015}


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip_per_preset_within_its_bound(rng, name):
    x = feature_like(rng)
    enc = parse_preset(name)
    basis = fit_pca(x, enc.components) if enc.uses_pca else None
    stored = encode_block(x, enc, basis)
    assert stored.values.dtype == np.dtype(enc.value_dtype)
    assert stored.values.shape == (x.shape[0], enc.stored_channels(x.shape[1]), *x.shape[2:])
    assert (stored.quant is not None) == enc.int8
    y = decode_block(stored.values, enc, stored.quant, basis)
    assert y.shape == x.shape and np.isfinite(y).all()
    assert relative_error(x, y) < BOUNDS[name]
    assert y.dtype == (np.float16 if enc.is_default else np.float32)


def test_coefficients_are_the_projection(rng):
    x = feature_like(rng)
    enc = parse_preset("pca8-int8")
    basis = fit_pca(x, 8)
    stored = encode_block(x, enc, basis)
    coef = decode_block(stored.values, enc, stored.quant, basis, coefficients=True)
    assert coef.shape == (x.shape[0], 8, *x.shape[2:])
    np.testing.assert_allclose(basis.reconstruct(coef), decode_block(stored.values, enc, stored.quant, basis))


def test_encodings_need_their_basis_and_scale(rng):
    x = feature_like(rng)
    with pytest.raises(SchemaError, match="needs its PCA basis"):
        encode_block(x, parse_preset("pca8"))
    with pytest.raises(SchemaError, match="no PCA basis"):
        encode_block(x, parse_preset("int8"), fit_pca(x, 4))
    codes = encode_block(x, parse_preset("int8")).values
    with pytest.raises(SchemaError, match="scale/offset"):
        decode_block(codes, parse_preset("int8"))


def test_float16_coefficient_overflow_names_the_int8_preset():
    x = np.zeros((4, 4, 2, 2), np.float32)
    x[:, 0] = np.array([-1e5, 1e5, -2e5, 2e5])[:, None, None]
    with pytest.raises(SchemaError, match="pca2-int8"):
        encode_block(x, parse_preset("pca2"), fit_pca(x, 2))


def test_calibration_tiles_spread_over_slides_and_are_seeded():
    slides = ["a"] * 50 + ["b"] * 5 + ["c"] * 20
    picked = calibration_tiles(slides, 9, seed=0)
    assert len(picked) == 9 and list(picked) == sorted(set(picked))
    counts = {s: sum(slides[i] == s for i in picked) for s in "abc"}
    assert counts == {"a": 3, "b": 3, "c": 3}
    assert list(calibration_tiles(slides, 9, seed=0)) == list(picked)
    assert list(calibration_tiles(slides, 9, seed=1)) != list(picked)
    assert len(calibration_tiles(slides, 500)) == len(slides)


def test_relative_error_of_zero_features():
    z = np.zeros((1, 2, 2, 2))
    assert relative_error(z, z) == 0.0 and relative_error(z, z + 1) == float("inf")


def test_one_basis_per_block_and_timestep_and_one_hash_over_them(rng):
    from pathsegdiff.store.encodings import bases_sha256, fit_bases

    samples = {(50, "up1"): feature_like(rng, c=12), (150, "up1"): feature_like(rng, c=12),
               (50, "up2"): feature_like(rng, c=8, hw=8)}
    bases = fit_bases(samples, 4)
    assert sorted(bases) == sorted(samples) and bases[(50, "up2")].components.shape == (4, 8)
    again = fit_bases(dict(reversed(list(samples.items()))), 4)
    assert bases_sha256(again) == bases_sha256(bases)
    assert bases_sha256({**bases, (50, "up2"): bases[(150, "up1")]}) != bases_sha256(bases)
