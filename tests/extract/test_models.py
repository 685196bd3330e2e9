"""Model spec parsing, the tiny model, and the LDM object's contract."""

from __future__ import annotations

import pytest
import torch

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.models import LDM, ModelSpec, load_model
from pathsegdiff.extract.tiny import build_tiny


def test_parse_tiny_and_missing_paths(tmp_path):
    assert ModelSpec.parse("tiny") == ModelSpec("tiny") and ModelSpec("tiny").kind == "tiny"
    with pytest.raises(ModelLoadError, match="nowhere"):
        ModelSpec.parse(str(tmp_path / "nowhere"))
    (tmp_path / "file.ckpt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="file.ckpt.*got a file"):
        ModelSpec.parse(str(tmp_path / "file.ckpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="empty: not a recognised model directory"):
        load_model(str(tmp_path / "empty"))


def test_tiny_contract(tiny):
    assert isinstance(tiny, LDM)
    assert tiny.model_id == "tiny-v1" and tiny.untrained
    assert (tiny.latent_channels, tiny.downsample) == (3, 4)
    assert (tiny.context_tokens, tiny.context_dim, tiny.ssl_dim) == (2, 64, 384)
    assert tiny.alphas_cumprod.shape == (1000,)
    # the reference schedule (DESIGN.md 3): abar at t = 50, 100, 250
    assert [round(float(tiny.alphas_cumprod[t]), 3) for t in (50, 100, 250)] == [0.917, 0.823, 0.508]
    rgb = torch.rand(2, 3, 64, 64) * 2 - 1
    assert tiny.encode(rgb).shape == (2, 3, 16, 16)
    assert tiny.context(None, 2).shape == (2, 2, 64)
    assert tiny.context(torch.randn(2, 384), 2).shape == (2, 2, 64)
    with pytest.raises(ModelLoadError, match="expected \\(2, 384\\)"):
        tiny.context(torch.randn(2, 100), 2)


def test_null_context_is_the_projection_bias(tiny):
    # zero embeddings stay zero through L2 normalisation: each token is its layer's bias
    ctx = tiny.context(None, 1)[0]
    assert torch.equal(ctx[0], tiny.cond.patch_fc.bias) and torch.equal(ctx[1], tiny.cond.region_fc.bias)
    # a real embedding is normalised first: its scale does not matter
    e = torch.randn(1, 384)
    torch.testing.assert_close(tiny.context(e, 1), tiny.context(5 * e, 1))


def test_tiny_weights_are_deterministic(tiny):
    again = build_tiny()
    assert again.weights_sha256 == tiny.weights_sha256 and again.config_sha256 == tiny.config_sha256
    for a, b in zip(again.unet.state_dict().values(), tiny.unet.state_dict().values()):
        assert torch.equal(a, b)
    # no layer left at zero (diffusers zero-initialises some output convs): every path carries signal
    assert all(p.abs().max() > 0 for p in tiny.unet.parameters())


def test_to_dtype_round_trip():
    ldm = build_tiny().to("cpu", torch.bfloat16)
    assert ldm.dtype == torch.bfloat16 and ldm.cond.patch_fc.weight.dtype == torch.bfloat16
    out = ldm.encode(torch.zeros(1, 3, 32, 32))
    assert out.dtype == torch.bfloat16
