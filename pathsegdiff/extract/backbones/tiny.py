"""Seeded, untrained models: the built-in ``tiny`` one and a reference-size stand-in.

Like the reference (docs/architecture.md) it has a VQ-f4 first stage (3 latent
channels), a 4-level cross-attention UNet with attention at all but the
finest level and one head per level, and an SSL projection (patch 384 ->
context, region token fed zeros) giving 2 context tokens.  It is much
narrower (32-96 channels, one resnet per level) so a 256 px tile runs in
tens of milliseconds on one CPU core.

Its weights are NOT trained: features from it test the plumbing, not the
biology.  They are drawn from a fixed seed with our own generator (not
torch's module initialisers), so they, and ``weights_sha256``, do not
change with the torch or diffusers version.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel, VQModel

from pathsegdiff.extract.backbones.base import Family, config_sha256, state_dict_sha256
from pathsegdiff.extract.backbones.compvis_config import (
    REFERENCE_FIRST_STAGE,
    REFERENCE_UNET,
    first_stage_config,
    unet_config,
)
from pathsegdiff.extract.backbones.ldm import (
    LDM,
    SSLProjection,
    scaled_linear_alphas_cumprod,
)
from pathsegdiff.extract.backbones.seeding import seed_module

TINY_MODEL_ID = "tiny-v1"  # bump when the config or the weight recipe changes
TINY_SEED = 20240601
SSL_DIM = 384
CONTEXT_DIM = 64
BETA_START, BETA_END = 0.0015, 0.0195  # the reference schedule

UNET_CONFIG = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 48, 64, 96),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=CONTEXT_DIM,
    attention_head_dim=1,  # diffusers' legacy name: the number of heads (the reference has num_heads 1)
)

VQ_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 32),
    layers_per_block=1,
    latent_channels=3,
    num_vq_embeddings=256,
    norm_num_groups=4,
    mid_block_add_attention=False,  # a 64x64 self-attention would dominate the tiny model's cost
    scaling_factor=1.0,
)


def _seeded_ldm(model_id: str, unet_cfg: dict, vq_cfg: dict, context_dim: int, device: str = "cpu") -> LDM:
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vq = VQModel(**vq_cfg)
        cond = SSLProjection(SSL_DIM, context_dim, region_dim=768, normalize=True)
    for prefix, module in (("unet", unet), ("vq", vq), ("cond", cond)):
        seed_module(TINY_SEED, prefix, module)
    return LDM(
        model_id=model_id,
        weights_sha256=state_dict_sha256(unet, vq, cond),
        config_sha256=config_sha256({"unet": unet_cfg, "vq": vq_cfg, "ssl_dim": SSL_DIM, "seed": TINY_SEED}),
        unet=unet,
        first_stage=lambda rgb: vq.encode(rgb).latents,  # pre-quantisation output, as the reference
        first_stage_module=vq,
        scale_factor=1.0,
        alphas_cumprod=scaled_linear_alphas_cumprod(BETA_START, BETA_END),
        latent_channels=3,
        downsample=2 ** (len(vq_cfg["block_out_channels"]) - 1),
        context_tokens=cond.tokens,
        context_dim=context_dim,
        ssl_dim=SSL_DIM,
        cond=cond,
        untrained=True,
    )


def build_tiny() -> LDM:
    """The seeded tiny LDM on the CPU in float32."""
    return _seeded_ldm(TINY_MODEL_ID, UNET_CONFIG, VQ_CONFIG, CONTEXT_DIM)


def build_reference_size(device: str = "cpu") -> LDM:
    """Random weights in the reference model's exact shapes (about 400 M UNet parameters).

    For benchmarks and memory checks; built directly on ``device``.  The
    seeding loop fills each tensor on the CPU, so building takes seconds.
    """
    _, vq_cfg = first_stage_config(REFERENCE_FIRST_STAGE)
    return _seeded_ldm("reference-size-random-v1", unet_config(REFERENCE_UNET), vq_cfg,
                       REFERENCE_UNET["context_dim"], device)


FAMILY = Family("tiny", builtin={"tiny": build_tiny})
