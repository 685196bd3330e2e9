"""Training batches as a pure function of (seed, stage, step, micro-batch): exact resume needs nothing else.

Every random choice of a step (which tiles, where to crop, flips, 90-degree
rotations, colour jitter, and for the UNet the timesteps, noise and
condition dropout) is drawn from :func:`step_generator`, a CPU
``torch.Generator`` seeded from those four numbers.  A run killed at any
step and resumed therefore sees the same batches as one that never stopped,
whatever the process did before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from pathsegdiff.errors import InputError
from pathsegdiff.extract.pretrain.config import AugmentConfig
from pathsegdiff.extract.pretrain.tiles import TileBank

STAGE_CODES = {"autoencoder": 1, "unet": 2, "scale": 3}


def step_generator(seed: int, stage: str, step: int, micro: int = 0) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, stage, step, micro)."""
    key = f"pretrain:{seed}:{STAGE_CODES[stage]}:{step}:{micro}".encode()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1))
    return g


@dataclass(frozen=True)
class Batch:
    """``rgb`` (B, 3, c, c) float in [-1, 1]; ``uint8`` the same crops as (B, 3, c, c) uint8 (for conditioners)."""

    rgb: torch.Tensor
    uint8: torch.Tensor
    tile_ids: list[str]


def _jitter(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Mild colour jitter of (B, 3, c, c) float in [0, 1]."""
    b = x.shape[0]

    def u(*shape: int) -> torch.Tensor:  # uniform in [-1, 1]
        return torch.rand(*shape, generator=g) * 2 - 1

    gain = 1 + cfg.channel_gain * u(b, 3, 1, 1)
    contrast = 1 + cfg.contrast * u(b, 1, 1, 1)
    saturation = 1 + cfg.saturation * u(b, 1, 1, 1)
    brightness = cfg.brightness * u(b, 1, 1, 1)
    x = x * gain
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation + grey
    return (x + brightness).clamp(0, 1)


def make_batch(bank: TileBank, batch_size: int, crop: int, augment: AugmentConfig, g: torch.Generator) -> Batch:
    """``batch_size`` augmented crops of tiles drawn with replacement from ``bank``, all choices from ``g``."""
    if bank.min_side() < crop:
        raise InputError(f"tiles of {bank.min_side()} px are smaller than the {crop} px training crop")
    picks = torch.randint(len(bank), (batch_size,), generator=g).tolist()
    crops = []
    for i in picks:
        tile = bank.rgb[i]
        y = int(torch.randint(tile.shape[1] - crop + 1, (1,), generator=g))
        x = int(torch.randint(tile.shape[2] - crop + 1, (1,), generator=g))
        c = torch.from_numpy(np.ascontiguousarray(tile[:, y:y + crop, x:x + crop]))
        flip, rot = torch.randint(2, (1,), generator=g).item(), torch.randint(4, (1,), generator=g).item()
        if augment.flips and flip:
            c = c.flip(-1)
        if augment.rot90 and rot:
            c = torch.rot90(c, rot, dims=(1, 2))
        crops.append(c)
    x8 = torch.stack(crops)  # (B, 3, c, c) uint8
    x = _jitter(x8.float() / 255.0, augment, g)
    x8 = (x * 255).round().to(torch.uint8)  # what a conditioner sees: the jittered crop
    return Batch(rgb=x * 2 - 1, uint8=x8, tile_ids=[bank.tile_ids[i] for i in picks])
