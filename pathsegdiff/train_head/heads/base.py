"""The built-in heads' base class: stacks each block's timesteps and checks shapes against the config.

Every built-in head takes a :class:`~pathsegdiff.train_head.heads.protocol.HeadInputs`
(or, as callers before the protocol did, a bare ``{timestep: {block: tensor}}``
mapping) and returns logits (B, K, H, W) at the label resolution.  The
timesteps of one block are stacked on the channel axis, so a head sees one
(B, T*C, h, w) map per block.  A built-in head is rebuilt from its
``HeadConfig`` (``heads/config.py``), which the checkpoint saves next to the
weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.errors import InputError
from pathsegdiff.train_head.heads.protocol import Features, HeadInputs, as_inputs


def groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the width (batch-size independent, unlike BatchNorm)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class SegHead(nn.Module):
    """Base of the built-in heads; ``config`` is their ``HeadConfig``."""

    needs_rgb = False

    def __init__(self, config):
        super().__init__()
        self.config = config

    def stack(self, x: HeadInputs | Features) -> list[torch.Tensor]:
        """One (B, T*C, h, w) float tensor per block, in config order."""
        features = as_inputs(x, self.config.out_size).features
        param = next(self.parameters())
        out = []
        for b in self.config.blocks:
            maps = []
            for t in self.config.timesteps:
                per_t = features.get(t, features.get(str(t))) if isinstance(features, Mapping) else None
                if per_t is None or b.name not in per_t:
                    raise InputError(f"head input lacks features for block {b.name!r} at t={t}")
                x = per_t[b.name]
                if tuple(x.shape[1:]) != b.shape:
                    raise InputError(
                        f"block {b.name!r} at t={t} has shape {tuple(x.shape[1:])}, the head expects {b.shape}"
                    )
                maps.append(x.to(device=param.device, dtype=param.dtype))
            out.append(torch.cat(maps, dim=1))
        return out

    def upsample(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-2:] == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def training_logits(
        self, inputs: HeadInputs | Features, labels: torch.Tensor, ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets the loss compares: here the full maps (B, K, H, W) and (B, H, W)."""
        return self(inputs), labels

    @torch.no_grad()
    def predict(self, inputs: HeadInputs | Features) -> torch.Tensor:
        """Class per pixel (B, H, W)."""
        return self(inputs).argmax(dim=1)
