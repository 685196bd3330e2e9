"""``pretrain``: the losses fall, a stopped-and-resumed run is bit-identical, and the output loads in ``extract``.

The recipe is the shipped one (``bench/train_he_tiny.py``: tiny architecture,
both stages, augmentation, null conditioning) shrunk to 32 px crops of a few
synthetic tiles and a handful of steps, so the file runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pathsegdiff.errors import ConfigError, StoreExistsError
from pathsegdiff.extract.backbones.registry import load_backbone
from pathsegdiff.extract.conditioning import make_conditioner
from pathsegdiff.extract.pretrain import PretrainConfig, StageConfig, TileBank, pretrain
from pathsegdiff.extract.pretrain.batches import make_batch, step_generator
from pathsegdiff.extract.pretrain.models import (
    alphas_cumprod,
    autoencoder_loss,
    build_autoencoder,
    build_denoiser,
    diffusion_loss,
    pre_quant_latent,
)

CROP = 32


def _bank(n: int = 4, side: int = 48, seed: int = 0) -> TileBank:
    """Smooth colour fields with blobs: enough structure for losses to fall."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    tiles = []
    for _ in range(n):
        f = rng.uniform(2, 6, size=(3, 2))
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy)) for c in range(3)])
        tiles.append((img * 255).astype(np.uint8))
    return TileBank(tiles, [f"t{i}" for i in range(n)], [{"kind": "synthetic"}])


def _config(ae_steps: int = 4, unet_steps: int = 4, seed: int = 3) -> PretrainConfig:
    stage = dict(batch_size=2, warmup=2, checkpoint_every=2)
    return PretrainConfig(autoencoder=StageConfig(steps=ae_steps, **stage), unet=StageConfig(steps=unet_steps, **stage),
                          crop=CROP, seed=seed)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models; two threads stall when jobs share the cores


def _weights(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*.safetensors"))
    assert len(files) == 3, files  # unet, vae, ssl_projection
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_losses_fall_on_a_fixed_batch():
    cfg = _config()
    batch = make_batch(_bank(), 4, CROP, cfg.augment, step_generator(0, "autoencoder", 0))
    vq = build_autoencoder(cfg)
    opt = torch.optim.AdamW(vq.parameters(), lr=2e-3)
    ae = []
    for _ in range(12):
        loss, _ = autoencoder_loss(vq, batch.rgb, cfg.commitment)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ae.append(float(loss.detach()))
    assert ae[-1] < 0.85 * ae[0], ae

    with torch.no_grad():
        z0 = pre_quant_latent(vq.eval(), batch.rgb)  # (4, 3, 8, 8)
    unet, projection = build_denoiser(cfg)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([50, 150, 250, 400])  # fixed timesteps
    noise = torch.randn(z0.shape, generator=g)
    ssl, keep = torch.zeros(4, cfg.ssl_dim), torch.ones(4)
    opt = torch.optim.AdamW([*unet.parameters(), *projection.parameters()], lr=2e-3)
    dn = []
    for _ in range(12):
        loss = diffusion_loss(unet, projection, z0, ssl, t, noise, keep, alphas_cumprod())
        opt.zero_grad()
        loss.backward()
        opt.step()
        dn.append(float(loss.detach()))
    assert dn[-1] < 0.7 * dn[0], dn


def test_batches_are_a_function_of_seed_and_step():
    cfg, bank = _config(), _bank()
    a = make_batch(bank, 3, CROP, cfg.augment, step_generator(1, "unet", 5, 0))
    torch.manual_seed(123)  # the global generator plays no part
    b = make_batch(bank, 3, CROP, cfg.augment, step_generator(1, "unet", 5, 0))
    c = make_batch(bank, 3, CROP, cfg.augment, step_generator(1, "unet", 6, 0))
    assert torch.equal(a.rgb, b.rgb) and a.tile_ids == b.tile_ids
    assert not torch.equal(a.rgb, c.rgb)
    assert a.rgb.shape == (3, 3, CROP, CROP) and -1 <= float(a.rgb.min()) and float(a.rgb.max()) <= 1


def test_stopped_and_resumed_run_is_bit_identical(tmp_path):
    bank, cfg = _bank(), _config()
    whole = pretrain(cfg, bank, tmp_path / "whole", progress=False, echo=lambda m: None)
    assert whole.finished and whole.steps == {"autoencoder": 4, "unet": 4}

    parts = tmp_path / "parts"
    first = pretrain(cfg, bank, parts, progress=False, stop_after=3, echo=lambda m: None)  # stops inside stage 1
    assert not first.finished and first.steps == {"autoencoder": 3}
    torch.manual_seed(999)  # a fresh process would have other global RNG states
    second = pretrain(cfg, bank, parts, progress=False, stop_after=3, echo=lambda m: None)  # 1 + 3 steps
    assert second.steps == {"autoencoder": 4, "unet": 3}
    third = pretrain(cfg, bank, parts, progress=False, echo=lambda m: None)
    assert third.finished
    assert _weights(parts) == _weights(tmp_path / "whole")
    assert third.final_loss == whole.final_loss
    assert (parts / "loss.png").is_file() and "steps reached" in (parts / "model_card.md").read_text()


def test_a_time_budget_closes_a_stage_for_good(tmp_path):
    bank, cfg = _bank(), _config(ae_steps=50, unet_steps=2)
    first = pretrain(cfg, bank, tmp_path / "m", progress=False, budget_minutes={"autoencoder": 1e-9},
                     echo=lambda m: None)
    assert first.finished and first.steps == {"autoencoder": 1, "unet": 2}
    again = pretrain(cfg, bank, tmp_path / "m", progress=False, echo=lambda m: None)  # no budget: still closed
    assert again.steps == first.steps


def test_resume_refuses_other_settings_and_foreign_folders(tmp_path):
    bank = _bank()
    pretrain(_config(ae_steps=2, unet_steps=0), bank, tmp_path / "m", progress=False, echo=lambda m: None)
    with pytest.raises(ConfigError, match="other settings"):
        pretrain(_config(ae_steps=2, unet_steps=0, seed=4), bank, tmp_path / "m", progress=False, echo=lambda m: None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(StoreExistsError, match="--overwrite"):
        pretrain(_config(), bank, tmp_path / "other", progress=False, echo=lambda m: None)


def test_output_loads_as_a_conditioned_backbone(tmp_path):
    bank = _bank()
    pretrain(_config(ae_steps=2, unet_steps=2), bank, tmp_path / "m", progress=False, echo=lambda m: None)
    backbone = load_backbone(str(tmp_path / "m"))
    assert backbone.ssl_dim == 384 and backbone.context_tokens == 2 and backbone.cond is not None
    assert not backbone.untrained and any("ssl_projection" in n for n in backbone.notes)
    conditioner = make_conditioner("null", backbone)
    rgb8 = torch.from_numpy(np.stack(bank.rgb))[:, :, :CROP * 1, :CROP * 1].contiguous()  # (4, 3, 32, 32)
    z = backbone.encode(rgb8.float() / 127.5 - 1)
    context = backbone.context(conditioner.embed(rgb8, bank.tile_ids), 4)
    feats = backbone.forward_blocks(z, 50, context, ["up1", "up2"])
    assert z.shape == (4, 3, 8, 8) and context.shape == (4, 2, 64)
    assert all(torch.isfinite(f).all() for f in feats.values())
    assert set(feats) == {"up1", "up2"}


def test_the_cli_pretrains_then_extract_loads_the_model(tmp_path):
    from typer.testing import CliRunner

    from pathsegdiff.cli import app

    tiles = Path(__file__).parents[1] / "data" / "he_tiles"
    model = tmp_path / "model"
    r = CliRunner().invoke(app, ["pretrain", str(tiles), "-o", str(model), "--tile-size", "64", "--crop", "32",
                                 "--ae-steps", "2", "--unet-steps", "2", "--batch-size", "2", "--threads", "1",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    assert "unet 2 steps" in r.output and str(model) in r.output
    r = CliRunner().invoke(app, ["extract", str(tiles), "-o", str(tmp_path / "s.zarr"), "--model", str(model),
                                 "--tile-size", "64", "--limit", "2", "--quiet"])
    assert r.exit_code == 0 and "2 tiles written" in r.output, r.output
