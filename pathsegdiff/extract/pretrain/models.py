"""The networks a pretraining run trains, and each stage's loss on one micro-batch.

The shapes are the seeded ``tiny`` model's (``extract/backbones/tiny.py``):
a VQ-f4 first stage with 3 latent channels and a 4-level cross-attention
UNet, conditioned through an :class:`SSLProjection` (patch token + a zero
region token: 2 context tokens, as the reference).  Initial weights come
from torch's initialisers under ``seed``.

Losses (no downloaded network anywhere):

- autoencoder: L1 + MSE between the crop and its reconstruction through the
  quantiser, plus the VQ commitment/codebook loss;
- UNet: eps-prediction MSE on the pre-quantisation latent (what ``extract``
  encodes), scaled by the latent's measured ``scale_factor``, at timesteps
  of the reference schedule, with the embedding zeroed per sample where
  ``keep`` is 0 (condition dropout; a null condition is then in-distribution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel, VQModel

from pathsegdiff.extract.backbones.ldm import SSLProjection, scaled_linear_alphas_cumprod
from pathsegdiff.extract.backbones.tiny import BETA_END, BETA_START, CONTEXT_DIM, UNET_CONFIG, VQ_CONFIG
from pathsegdiff.extract.pretrain.config import PretrainConfig

REGION_DIM = 768  # the reference's region token; fed zeros, as at inference
TIMESTEPS = 1000


@dataclass(frozen=True)
class Architecture:
    unet: dict
    vq: dict
    context_dim: int
    region_dim: int | None = REGION_DIM


def architecture(cfg: PretrainConfig) -> Architecture:
    # one architecture today ("tiny", checked by the config); sample_size is only a default for pipelines
    return Architecture(unet={**UNET_CONFIG, "sample_size": cfg.crop // 4}, vq=dict(VQ_CONFIG), context_dim=CONTEXT_DIM)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_autoencoder(cfg: PretrainConfig) -> VQModel:
    return _seeded(cfg.seed, lambda: VQModel(**architecture(cfg).vq))


def build_denoiser(cfg: PretrainConfig) -> tuple[UNet2DConditionModel, SSLProjection]:
    arch = architecture(cfg)
    return _seeded(cfg.seed + 1, lambda: (UNet2DConditionModel(**arch.unet),
                                          SSLProjection(cfg.ssl_dim, arch.context_dim, region_dim=arch.region_dim,
                                                        normalize=True)))


def alphas_cumprod() -> torch.Tensor:
    """The reference schedule (scaled_linear 0.0015..0.0195, 1000 steps), float64."""
    return scaled_linear_alphas_cumprod(BETA_START, BETA_END, TIMESTEPS)


def pre_quant_latent(vq: VQModel, rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H/4, W/4): the pre-quantisation output, as ``extract`` encodes."""
    return vq.encode(rgb).latents


def autoencoder_loss(vq: VQModel, rgb: torch.Tensor, commitment: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + MSE reconstruction through the quantiser, plus ``commitment`` x the VQ loss."""
    h = pre_quant_latent(vq, rgb)  # (B, 3, c/4, c/4)
    out = vq.decode(h)  # quantised, decoded: (B, 3, c, c)
    l1 = (out.sample.float() - rgb).abs().mean()
    mse = ((out.sample.float() - rgb) ** 2).mean()
    vq_loss = out.commit_loss.float().mean()
    loss = l1 + mse + commitment * vq_loss
    return loss, {"l1": float(l1.detach()), "mse": float(mse.detach()), "vq": float(vq_loss.detach())}


def diffusion_loss(unet: UNet2DConditionModel, projection: SSLProjection, z0: torch.Tensor, ssl: torch.Tensor,
                   t: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """eps-prediction MSE.  z0, noise (B, c, h, w); ssl (B, D); t (B,) long; keep (B,) 0/1; abar (T,)."""
    a = abar.to(z0.device)[t].float().view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    context = projection(ssl * keep.view(-1, 1).to(ssl.dtype))  # (B, tokens, context_dim)
    eps = unet(zt, t, encoder_hidden_states=context).sample
    return ((eps.float() - noise) ** 2).mean()
