"""``compile=True`` (``extract --compile``): inductor on the CPU matches eager; a failed compile falls back, once.

Compiling the tiny model with inductor takes a minute or more on a loaded
2-core machine, so the inductor test compiles one block at one timestep on
two 64 px tiles, once.  The fallback test uses a backend that always fails.
Eager features stay bit-identical across batch sizes on the CPU
(test_features.py); compiled ones are promised only within TOLERANCE of
eager: kernels are fused and reordered (measured 2.6e-6 on 256 px tiles,
up1 and up2 at t = 50 and 150).
"""

from __future__ import annotations

import pytest
import torch

from pathsegdiff.extract.compiled import CompiledForward
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

TOLERANCE = 1e-4  # max |compiled - eager| / max |eager|, per block


def max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.slow
def test_inductor_features_match_eager(tiny, tiles):
    rgb, ids = tiles
    cfg = FeatureConfig(blocks=("up1",), timesteps=(50,))
    eager = Featurizer(tiny, cfg)(rgb[:2], ids[:2], out_dtype=torch.float32)
    compiled = Featurizer(tiny, cfg, compile=True)
    got = compiled(rgb[:2], ids[:2], out_dtype=torch.float32)
    assert compiled.compiled.failed is None  # inductor really ran
    assert max_relative(got.latent, eager.latent) < TOLERANCE
    x = got.features[50]["up1"]
    assert x.is_contiguous() and x.shape == eager.features[50]["up1"].shape
    assert max_relative(x, eager.features[50]["up1"]) < TOLERANCE
    assert tiny.unet.conv_in.weight.is_contiguous()  # the shared weights keep their layout: eager is unchanged


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no compiler here\nsecond line of a long report")


def test_a_failed_compile_falls_back_to_eager_with_one_warning_line(tiny, tiles, capfd):
    rgb, ids = tiles
    cfg = FeatureConfig(blocks=("mid", "up1"), timesteps=(50, 150))
    eager = Featurizer(tiny, cfg)(rgb[:3], ids[:3])
    featurizer = Featurizer(tiny, cfg)
    featurizer.compiled = CompiledForward(tiny, backend=_broken_backend)
    first = featurizer(rgb[:3], ids[:3])
    again = featurizer(rgb[:3], ids[:3])
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: --compile: torch.compile failed"), lines
    assert "no compiler here" in lines[0] and "second line" not in lines[0]
    assert featurizer.compiled.failed
    for out in (first, again):  # the eager path itself: bit-identical features
        assert torch.equal(out.latent, eager.latent)
        for t in (50, 150):
            for b in ("mid", "up1"):
                assert torch.equal(out.features[t][b], eager.features[t][b]), (t, b)
