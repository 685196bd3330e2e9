"""Random DINO ViT-S/16 weights, named as the DINO repository names them (HIPT's patch-level teacher)."""

from __future__ import annotations

import torch

DIM, DEPTH, HEADS = 384, 12, 6


def dino_vit_s16(seed: int = 0, grid: int = 14) -> dict[str, torch.Tensor]:
    """Random ViT-S/16 weights named as the DINO repository names them (224 px: 14x14 patches)."""
    gen = torch.Generator().manual_seed(seed)

    def w(*shape, scale=None):
        return torch.randn(*shape, generator=gen) * (scale if scale is not None else shape[-1] ** -0.5)

    sd = {"cls_token": w(1, 1, DIM, scale=0.02), "pos_embed": w(1, 1 + grid * grid, DIM, scale=0.02),
          "patch_embed.proj.weight": w(DIM, 3, 16, 16, scale=(3 * 256) ** -0.5), "patch_embed.proj.bias": w(DIM, scale=0.02),
          "norm.weight": 1 + w(DIM, scale=0.1), "norm.bias": w(DIM, scale=0.1)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + w(DIM, scale=0.1), b + "norm1.bias": w(DIM, scale=0.1),
               b + "attn.qkv.weight": w(3 * DIM, DIM), b + "attn.qkv.bias": w(3 * DIM, scale=0.02),
               b + "attn.proj.weight": w(DIM, DIM), b + "attn.proj.bias": w(DIM, scale=0.02),
               b + "norm2.weight": 1 + w(DIM, scale=0.1), b + "norm2.bias": w(DIM, scale=0.1),
               b + "mlp.fc1.weight": w(4 * DIM, DIM), b + "mlp.fc1.bias": w(4 * DIM, scale=0.02),
               b + "mlp.fc2.weight": w(DIM, 4 * DIM), b + "mlp.fc2.bias": w(DIM, scale=0.02)}
    return sd
