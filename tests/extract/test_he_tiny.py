"""The shipped he-tiny model: loads from the package, offline, conditioned like extract's other LDMs."""

from __future__ import annotations

import torch

from pathsegdiff.extract.backbones.he_tiny import HE_TINY_ID, WEIGHTS
from pathsegdiff.extract.backbones.registry import builtin_ids, load_backbone
from pathsegdiff.extract.featurize import Featurizer


def test_he_tiny_is_a_built_in_model_shipped_in_the_package():
    assert "he-tiny" in builtin_ids()
    for part in ("unet", "vae", "scheduler", "ssl_projection"):
        assert any((WEIGHTS / part).iterdir()), part
    ldm = load_backbone("he-tiny")
    assert ldm.model_id == HE_TINY_ID and not ldm.untrained
    assert ldm.ssl_dim == 384 and ldm.context_tokens == 2  # the SSL projection pretrain wrote


def test_he_tiny_features_are_deterministic_and_finite():
    featurizer = Featurizer.load("he-tiny")
    rgb = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = featurizer(rgb, ["t0", "t1"]).features
    b = featurizer(rgb, ["t0", "t1"]).features
    for t in a:
        for name in a[t]:
            assert torch.isfinite(a[t][name]).all() and torch.equal(a[t][name], b[t][name])
