"""Heads: shapes, configs, and the exact shortcuts the linear probe and the MLP ensemble take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store import BlockSpec
from pathsegdiff.train_head.checkpoint import build_head
from pathsegdiff.train_head.heads import HeadConfig, HeadInputs
from pathsegdiff.train_head.heads.mlp import gather_at, sample_pixels

BLOCKS = (BlockSpec("up1", 5, 4, 4), BlockSpec("up2", 3, 8, 8))


def config(kind: str, **kw) -> HeadConfig:
    return HeadConfig(kind, BLOCKS, (50, 150), n_classes=3, out_size=16, **kw)


def features(b: int = 2, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {t: {blk.name: torch.randn(b, *blk.shape, generator=g).to(dtype) for blk in BLOCKS} for t in (50, 150)}


@pytest.mark.parametrize("kind", ["fcn", "linear", "mlp", "rgb-fcn"])
def test_output_shape_and_config_round_trip(kind):
    cfg = config(kind, ensemble=2, mlp_hidden=(8, 4), proj_channels=4, hidden_channels=8, rgb_channels=4)
    torch.manual_seed(0)
    head = build_head(cfg).eval()
    x = HeadInputs(features(), (16, 16), torch.rand(2, 3, 16, 16))
    out = head(x)
    assert out.shape == (2, 3, 16, 16)
    assert head.predict(x).shape == (2, 16, 16)
    again = HeadConfig.from_dict(cfg.to_dict())
    assert again == cfg
    rebuilt = build_head(again).eval()
    rebuilt.load_state_dict(head.state_dict())
    torch.testing.assert_close(rebuilt(x), out)


@pytest.mark.parametrize("kind", ["fcn", "linear", "mlp"])
def test_float16_input_and_string_timestep_keys(kind):
    head = build_head(config(kind, ensemble=2, mlp_hidden=(8,))).eval()
    x = features(dtype=torch.float16)
    as_str = {str(t): d for t, d in x.items()}
    torch.testing.assert_close(head(x), head(as_str))


def test_missing_block_and_wrong_shape_are_input_errors():
    head = build_head(config("fcn")).eval()
    x = features()
    del x[150]["up2"]
    with pytest.raises(InputError, match="up2"):
        head(x)
    x = features()
    x[50]["up1"] = torch.zeros(2, 5, 8, 8)
    with pytest.raises(InputError, match="expects"):
        head(x)


def test_rgb_fcn_sees_the_rgb_at_full_resolution():
    torch.manual_seed(0)
    head = build_head(config("rgb-fcn", rgb_channels=4, rgb_layers=1)).eval()
    x = features()
    rgb = torch.rand(2, 3, 16, 16)
    a = head(HeadInputs(x, (16, 16), rgb))
    rgb[0, :, 5, 7] = 1 - rgb[0, :, 5, 7]  # one pixel of tile 0
    change = (head(HeadInputs(x, (16, 16), rgb)) - a).abs().amax(1)  # (B, H, W)
    assert change[1].max() == 0  # the other tile is untouched (GroupNorm is per tile)
    assert change[0, 4:7, 6:9].min() > change[0].median()  # the pixel's 3x3 neighbourhood moves most
    with pytest.raises(InputError, match="needs the tile's RGB"):
        head(x)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown head"):
        config("unet")
    with pytest.raises(ConfigError, match="takes options"):
        config("fcn", args={"width": 3})
    with pytest.raises(ConfigError, match="unknown head-config fields"):
        HeadConfig.from_dict({**config("fcn").to_dict(), "depth": 3})
    with pytest.raises(ConfigError):
        config("fcn", conv_layers=-1)


def test_linear_head_is_a_1x1_conv_on_the_upsampled_concatenation():
    torch.manual_seed(0)
    head = build_head(config("linear"))
    x = features(b=3)
    head.train()
    head(x)  # fill BatchNorm running statistics with something non-trivial
    head.eval()
    ups, weights = [], []
    for blk in BLOCKS:
        stacked = torch.cat([x[50][blk.name], x[150][blk.name]], 1)
        normed = head.norm[blk.name](stacked)
        ups.append(F.interpolate(normed, size=(16, 16), mode="bilinear", align_corners=False))
        weights.append(head.weight[blk.name].weight)
    reference = F.conv2d(torch.cat(ups, 1), torch.cat(weights, 1), head.bias)
    torch.testing.assert_close(head(x), reference, atol=1e-5, rtol=1e-5)


def test_gather_at_equals_upsample_then_index():
    x = torch.randn(2, 3, 4, 4)
    idx = torch.tensor([[0, 5, 17, 255], [3, 100, 200, 240]])
    up = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).flatten(2)  # (B, C, 256)
    want = torch.stack([up[b][:, idx[b]].T for b in range(2)]).reshape(-1, 3)
    torch.testing.assert_close(gather_at(x, idx, 16), want)


def test_mlp_sampled_pixels_equal_full_map_pixels():
    torch.manual_seed(0)
    head = build_head(config("mlp", ensemble=2, mlp_hidden=(8, 4), pixels_per_tile=20)).eval()
    x = features()
    labels = torch.randint(0, 3, (2, 16, 16))
    torch.manual_seed(1)
    idx, _ = sample_pixels(labels, 20, 255)
    torch.manual_seed(1)  # the same pixels again, inside training_logits
    at_pixels, _ = head.training_logits(x, labels, 255)  # eval mode: running statistics, as the full map
    at_pixels = at_pixels.view(2, 2, 20, 3).softmax(-1).mean(0).log()  # (B, P, K) log mean probability
    full = head(x).flatten(2)  # (B, K, 256)
    for b in range(2):
        torch.testing.assert_close(at_pixels[b], full[b][:, idx[b]].T, atol=1e-5, rtol=1e-5)


def test_mlp_training_logits_stack_members_and_skip_ignore():
    torch.manual_seed(0)
    head = build_head(config("mlp", ensemble=3, mlp_hidden=(8,), pixels_per_tile=10)).train()
    labels = torch.full((2, 16, 16), 255)
    labels[0, :2, :2] = 1  # tile 0 has 4 labelled pixels, tile 1 none
    logits, targets = head.training_logits(features(), labels, 255)
    assert logits.shape == (3 * 2 * 10, 3) and targets.shape == (60,)
    assert int((targets == 1).sum()) == 3 * 4 and int((targets == 255).sum()) == 60 - 12


def test_sample_pixels_draws_only_labelled_pixels():
    labels = torch.randint(0, 3, (4, 16, 16))
    labels[:, :8] = 255
    torch.manual_seed(0)
    idx, targets = sample_pixels(labels, 50, 255)
    assert idx.shape == (4, 50) and (targets != 255).all()
    assert (idx // 16 >= 8).all()
    assert all(len(set(row.tolist())) == 50 for row in idx)  # without replacement


def test_mlp_vote_is_the_majority_of_members():
    torch.manual_seed(0)
    head = build_head(config("mlp", ensemble=5, mlp_hidden=(8,))).eval()
    x = features()
    member_labels = torch.empty(5, 2, 16 * 16, dtype=torch.long)
    for i, pixels, logits in head.member_logits(head.stack(x)):  # logits (k, K, P)
        member_labels[:, i, pixels] = logits.argmax(1)
    member_labels = member_labels.view(5, 2, 16, 16)
    mean, labels, uncertainty = head.vote(x)
    counts = torch.stack([(member_labels == c).sum(0) for c in range(3)])  # (K, B, H, W)
    top2 = counts.topk(2, dim=0).values
    clear = top2[0] > top2[1]
    assert clear.any()
    assert (labels[clear] == counts.argmax(0)[clear]).all()
    assert uncertainty.shape == (2, 16, 16) and (uncertainty >= 0).all()
    torch.testing.assert_close(head(x), mean.log())
