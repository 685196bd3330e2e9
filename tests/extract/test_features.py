"""Feature extraction: block names and shapes, noise seeds, batch-size invariance."""

from __future__ import annotations

import pytest
import torch

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.extract.backbones.unet_blocks import partial_forward
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer, noise_seed, tile_noise


def fx_of(backbone, cfg):
    """A featurizer called as (rgb, ids, ssl) -> (features, latent)."""
    featurizer = Featurizer(backbone, cfg)

    def run(rgb, ids, ssl=None):
        out = featurizer(rgb, ids, ssl=ssl)
        return out.features, out.latent

    return run


def block_shapes(backbone, cfg, tile):
    return Featurizer(backbone, cfg).block_shapes(tile)


def test_available_blocks_of_tiny(tiny):
    assert tiny.blocks() == ["mid", "up0.pre", "up0", "up1.pre", "up1", "up2.pre", "up2", "up3"]
    assert tiny.default_blocks == ("up1", "up2") and tiny.default_timesteps == (50, 150)


def test_partial_forward_equals_the_full_unet(tiny, tiles):
    """Every block the partial forward returns is what the full UNet forward computes there."""
    rgb, ids = tiles
    z = tiny.encode(rgb[:1].float() / 127.5 - 1.0)
    context = tiny.context(None, 1)
    seen = {}
    hooks = [tiny.unet.mid_block.register_forward_hook(lambda m, a, out: seen.__setitem__("mid", out))]
    for i, block in enumerate(tiny.unet.up_blocks):
        hooks.append(block.register_forward_hook(lambda m, a, out, n=f"up{i}": seen.__setitem__(n, out)))
        if block.upsamplers:
            hooks.append(block.upsamplers[0].register_forward_pre_hook(
                lambda m, args, n=f"up{i}.pre": seen.__setitem__(n, args[0])))
    t = torch.full((1,), 50, dtype=torch.long)
    try:
        tiny.unet(z, t, encoder_hidden_states=context)
    finally:
        for h in hooks:
            h.remove()
    for name in tiny.blocks():
        assert torch.equal(partial_forward(tiny.unet, z, 50, context, (name,))[name], seen[name]), name


def test_block_shapes_match_a_real_run(tiny, tiles):
    rgb, ids = tiles
    cfg = FeatureConfig(blocks=tuple(tiny.blocks()), timesteps=(10,))
    feats, z0 = fx_of(tiny, cfg)(rgb[:2], ids[:2], None)
    shapes = block_shapes(tiny, cfg, 64)
    assert {b: tuple(x.shape[1:]) for b, x in feats[10].items()} == shapes
    assert shapes["up0"] == (96, 4, 4) and shapes["up0.pre"] == (96, 2, 2) and shapes["up3"] == (32, 16, 16)
    assert z0.shape == (2, 3, 16, 16)
    assert block_shapes(tiny, FeatureConfig(), 256) == {"up1": (64, 32, 32), "up2": (48, 64, 64)}


def test_unknown_block_lists_the_valid_ones(tiny):
    with pytest.raises(ConfigError, match=r"no block\(s\) \['up9'\].*up0\.pre"):
        block_shapes(tiny, FeatureConfig(blocks=("up1", "up9")), 64)
    with pytest.raises(ConfigError, match="up9"):
        fx_of(tiny, FeatureConfig(blocks=("up9",)))


def test_tile_size_must_fit_the_unet(tiny):
    with pytest.raises(ConfigError, match="multiple of 32"):
        block_shapes(tiny, FeatureConfig(), 48)


def test_timestep_outside_schedule(tiny):
    with pytest.raises(ConfigError, match="1000"):
        fx_of(tiny, FeatureConfig(timesteps=(50, 1000)))


def test_config_validation_and_round_trip():
    cfg = FeatureConfig(blocks=("mid", "up2"), timesteps=(5, 250), draws=3, seed=7)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"blocks": ["mid", "up2"], "timesteps": [5, 250], "draws": 3, "seed": 7}
    for bad in ({"blocks": ()}, {"timesteps": (5, 5)}, {"draws": 0}, {"timesteps": (-1,)}):
        with pytest.raises(ConfigError):
            FeatureConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        FeatureConfig.from_dict({"blocks": ["up1"], "stride": 2})


def test_noise_seed_is_stable_and_distinct():
    # Fixed value: a change here would silently change every stored feature.
    assert noise_seed(0, "slide/0", 50, 0) == 0x56a9fa8ecaf6002
    seeds = {noise_seed(s, tid, t, d) for s in (0, 1) for tid in ("a", "b") for t in (50, 150) for d in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
    noise = tile_noise((3, 4, 4), ["a", "b", "a"], 0, 50, 0)
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])


def test_bit_identical_for_batch_sizes_1_and_7(tiny, tiles):
    rgb, ids = tiles
    fx = fx_of(tiny, FeatureConfig(blocks=("mid", "up1.pre", "up2"), timesteps=(50, 150)))
    batched, z_batched = fx(rgb, ids, None)
    for i in range(7):
        single, z_single = fx(rgb[i : i + 1], ids[i : i + 1], None)
        assert torch.equal(z_single[0], z_batched[i])
        for t in (50, 150):
            for block in ("mid", "up1.pre", "up2"):
                assert torch.equal(single[t][block][0], batched[t][block][i]), (i, t, block)
    # order does not matter either: noise follows the tile id, not the position
    perm = [3, 0, 6, 1, 5, 2, 4]
    shuffled, _ = fx(rgb[perm], [ids[p] for p in perm], None)
    assert torch.equal(shuffled[150]["up2"], batched[150]["up2"][perm])


def test_timesteps_draws_and_conditioning_change_features(tiny, tiles):
    rgb, ids = tiles
    rgb, ids = rgb[:2], ids[:2]
    one = fx_of(tiny, FeatureConfig(blocks=("up1",), timesteps=(50, 400)))(rgb, ids, None)[0]
    assert not torch.equal(one[50]["up1"], one[400]["up1"])
    three = fx_of(tiny, FeatureConfig(blocks=("up1",), timesteps=(50,), draws=3))
    avg = three(rgb, ids, None)[0][50]["up1"]
    # the average of 3 draws equals the mean of 3 hand-made UNet passes, one per draw seed
    z0 = torch.cat([tiny.encode(rgb[i : i + 1].float() / 127.5 - 1.0) for i in range(2)])  # per tile, as on CPU
    context = tiny.context(None, 2)
    a = float(tiny.alphas_cumprod[50])
    by_hand = torch.zeros_like(avg)
    for draw in range(3):
        for i in range(2):
            eps = tile_noise((3, 16, 16), ids[i : i + 1], 0, 50, draw)
            zt = a**0.5 * z0[i : i + 1] + (1 - a) ** 0.5 * eps
            by_hand[i] += tiny.forward_blocks(zt, 50, context[i : i + 1], ("up1",))["up1"][0]
    torch.testing.assert_close(avg, by_hand / 3, rtol=1e-6, atol=1e-6)
    assert not torch.equal(avg, one[50]["up1"])
    ssl = torch.randn(2, tiny.ssl_dim)
    cond = fx_of(tiny, FeatureConfig(blocks=("up1",), timesteps=(50,)))(rgb, ids, ssl)[0]
    assert not torch.equal(cond[50]["up1"], one[50]["up1"])
    other_seed = fx_of(tiny, FeatureConfig(blocks=("up1",), timesteps=(50,), seed=1))(rgb, ids, None)[0]
    assert not torch.equal(other_seed[50]["up1"], one[50]["up1"])


def test_bad_batches(tiny, tiles):
    rgb, ids = tiles
    fx = fx_of(tiny, FeatureConfig())
    with pytest.raises(InputError, match="uint8"):
        fx(rgb.float(), ids, None)
    with pytest.raises(InputError, match="tile ids"):
        fx(rgb, ids[:3], None)
