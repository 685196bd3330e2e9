"""Conditioners: null, HIPT from DINO weights, precomputed files."""

from __future__ import annotations

import pytest
import torch

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.conditioning import make_conditioner


def test_null_conditioner(tiny, tiles):
    rgb, ids = tiles
    cond = make_conditioner("null", tiny)
    assert (cond.name, cond.dim) == ("null", 384)
    out = cond.embed(rgb, ids)
    assert out.shape == (7, 384) and out.dtype == torch.float32 and not out.any()


def test_bad_conditioning_arguments(tiny, tmp_path):
    with pytest.raises(ConfigError, match="unknown conditioning 'clip'"):
        make_conditioner("clip", tiny)
    with pytest.raises(ModelLoadError, match="missing.pth: hipt file not found"):
        make_conditioner(f"hipt:{tmp_path / 'missing.pth'}", tiny)
    with pytest.raises(ConfigError, match="needs a path"):
        make_conditioner("hipt:", tiny)
