"""Segmentation heads on cached diffusion features: FCN, linear probe, pixel-MLP ensemble.

Every head takes ``features[t][block]`` tensors of shape (B, C, h, w) at the
block's native resolution (as stored) and returns logits (B, K, H, W) at the
label resolution.  The timesteps of one block are stacked on the channel axis,
so a head sees one (B, T*C, h, w) map per block.  A head is rebuilt from its
:class:`HeadConfig`, which the checkpoint saves next to the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store.schema import BlockSpec

HEAD_KINDS = ("fcn", "linear", "mlp")
Features = Mapping[int, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class HeadConfig:
    """What a head needs to be rebuilt: its inputs, its classes and its size."""

    kind: str
    blocks: tuple[BlockSpec, ...]  # selected blocks with their stored (C, h, w)
    timesteps: tuple[int, ...]
    n_classes: int
    out_size: int  # label resolution (the tile size)
    proj_channels: int = 64  # fcn: per-block 1x1 projection width
    hidden_channels: int = 128  # fcn: width of the 3x3 conv layers
    conv_layers: int = 2  # fcn: number of 3x3 conv layers
    mlp_hidden: tuple[int, ...] = (256, 128)  # mlp: hidden widths (DDPM-seg uses 256, 128)
    ensemble: int = 10  # mlp: members voting per pixel (DDPM-seg uses 10)
    pixels_per_tile: int = 2048  # mlp: labelled pixels sampled per tile per step (bounds memory)

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ConfigError(f"unknown head {self.kind!r}; choose one of {', '.join(HEAD_KINDS)}")
        if not self.blocks or not self.timesteps:
            raise ConfigError("a head needs at least one block and one timestep")
        if self.n_classes < 2:
            raise ConfigError(f"a head needs at least 2 classes, got {self.n_classes}")
        for name in ("out_size", "proj_channels", "hidden_channels", "ensemble", "pixels_per_tile"):
            if getattr(self, name) < 1:
                raise ConfigError(f"head option {name} must be >= 1, got {getattr(self, name)}")
        if self.conv_layers < 0 or any(h < 1 for h in self.mlp_hidden):
            raise ConfigError("conv_layers must be >= 0 and mlp_hidden widths >= 1")

    @property
    def in_channels(self) -> dict[str, int]:
        """Channels each block contributes once its timesteps are stacked."""
        return {b.name: b.channels * len(self.timesteps) for b in self.blocks}

    @property
    def common_size(self) -> int:
        """The resolution the FCN fuses blocks at: the finest selected block."""
        return max(max(b.height, b.width) for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [asdict(b) for b in self.blocks]
        d["timesteps"] = list(self.timesteps)
        d["mlp_hidden"] = list(self.mlp_hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadConfig:
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown head-config fields {sorted(unknown)}")
        d["blocks"] = tuple(BlockSpec(**b) for b in d["blocks"])
        d["timesteps"] = tuple(int(t) for t in d["timesteps"])
        d["mlp_hidden"] = tuple(int(h) for h in d.get("mlp_hidden", (256, 128)))
        return cls(**d)


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the width (batch-size independent, unlike BatchNorm)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class SegHead(nn.Module):
    """Base: stacks the timesteps of each block and checks shapes against the config."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config

    def stack(self, features: Features) -> list[torch.Tensor]:
        """One (B, T*C, h, w) float tensor per block, in config order."""
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
        self, features: Features, labels: torch.Tensor, ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets the loss compares: here the full maps (B, K, H, W) and (B, H, W)."""
        return self(features), labels

    @torch.no_grad()
    def predict(self, features: Features) -> torch.Tensor:
        """Class per pixel (B, H, W)."""
        return self(features).argmax(dim=1)


class FCNHead(SegHead):
    """PathSegDiff-style: per-block 1x1 projection + norm + ReLU, upsample, concat, 3x3 convs, upsample."""

    def __init__(self, config: HeadConfig):
        super().__init__(config)
        p, h = config.proj_channels, config.hidden_channels
        self.project = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(c, p, 1), nn.GroupNorm(_groups(p), p), nn.ReLU(inplace=True))
            for name, c in config.in_channels.items()
        })
        layers: list[nn.Module] = []
        width = p * len(config.blocks)
        for _ in range(config.conv_layers):
            layers += [nn.Conv2d(width, h, 3, padding=1), nn.GroupNorm(_groups(h), h), nn.ReLU(inplace=True)]
            width = h
        self.fuse = nn.Sequential(*layers)
        self.classify = nn.Conv2d(width, config.n_classes, 1)

    def forward(self, features: Features) -> torch.Tensor:
        size = self.config.common_size
        xs = [self.upsample(self.project[b.name](x), size) for b, x in zip(self.config.blocks, self.stack(features))]
        x = self.fuse(torch.cat(xs, dim=1))  # (B, hidden, s, s) with s the finest block size
        return self.upsample(self.classify(x), self.config.out_size)  # (B, K, H, W)


class LinearHead(SegHead):
    """Linear probe: a 1x1 conv on the concatenation of all blocks upsampled to label resolution.

    Bilinear upsampling is linear and per channel, so it commutes with a 1x1
    conv: each block is mapped to K channels at its native size and the
    upsampled results are summed, which is the same function at a fraction of
    the memory.  A non-affine BatchNorm standardises each input channel first
    (as in MAE's linear probing); at evaluation it is a fixed affine map, so
    the probe stays linear.
    """

    def __init__(self, config: HeadConfig):
        super().__init__(config)
        self.norm = nn.ModuleDict({n: nn.BatchNorm2d(c, affine=False) for n, c in config.in_channels.items()})
        # One bias in total, not one per block.
        self.weight = nn.ModuleDict({n: nn.Conv2d(c, config.n_classes, 1, bias=False)
                                     for n, c in config.in_channels.items()})
        self.bias = nn.Parameter(torch.zeros(config.n_classes))

    def forward(self, features: Features) -> torch.Tensor:
        out = self.bias.view(1, -1, 1, 1)
        for b, x in zip(self.config.blocks, self.stack(features)):
            out = out + self.upsample(self.weight[b.name](self.norm[b.name](x)), self.config.out_size)
        return out

