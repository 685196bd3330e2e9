"""The FCN heads: PathSegDiff's decoder on the stored blocks, and its image-guided variant (``rgb-fcn``)."""

from __future__ import annotations

import torch
from torch import nn

from pathsegdiff.errors import InputError
from pathsegdiff.train_head.heads.base import SegHead, groups
from pathsegdiff.train_head.heads.protocol import Features, HeadInputs, as_inputs


def conv_block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups(c_out), c_out),
            nn.ReLU(inplace=True)]


class FCNHead(SegHead):
    """PathSegDiff-style: per-block 1x1 projection + norm + ReLU, upsample, concat, 3x3 convs, upsample."""

    def __init__(self, config):
        super().__init__(config)
        p, h = config.proj_channels, config.hidden_channels
        self.project = nn.ModuleDict({name: nn.Sequential(*conv_block(c, p, 1))
                                      for name, c in config.in_channels.items()})
        layers: list[nn.Module] = []
        width = p * len(config.blocks)
        for _ in range(config.conv_layers):
            layers += conv_block(width, h, 3)
            width = h
        self.fuse = nn.Sequential(*layers)
        self.fused_channels = width
        self.classify = nn.Conv2d(width, config.n_classes, 1)

    def fused(self, inputs: HeadInputs | Features) -> torch.Tensor:
        """(B, hidden, s, s): the blocks projected, upsampled to the finest block size s, fused."""
        size = self.config.common_size
        xs = [self.upsample(self.project[b.name](x), size) for b, x in zip(self.config.blocks, self.stack(inputs))]
        return self.fuse(torch.cat(xs, dim=1))

    def forward(self, inputs: HeadInputs | Features) -> torch.Tensor:
        return self.upsample(self.classify(self.fused(inputs)), self.config.out_size)  # (B, K, H, W)


class RGBFCNHead(FCNHead):
    """Image-guided FCN (eva's ``ConvDecoderWithImage``): the fcn's fused map, narrowed to ``rgb_channels`` by
    a 1x1 conv and upsampled to label resolution, is concatenated with the tile's RGB at full resolution;
    ``rgb_layers`` 3x3 convs there, then a 1x1 conv to the classes.  The raw image sharpens boundaries
    that the coarse features blur (eva issue 698)."""

    needs_rgb = True

    def __init__(self, config):
        super().__init__(config)
        r = config.rgb_channels
        self.narrow = nn.Sequential(*conv_block(self.fused_channels, r, 1))
        layers: list[nn.Module] = []
        width = r + 3
        for _ in range(config.rgb_layers):
            layers += conv_block(width, r, 3)
            width = r
        self.refine = nn.Sequential(*layers)
        self.classify = nn.Conv2d(width, config.n_classes, 1)

    def forward(self, inputs: HeadInputs | Features) -> torch.Tensor:
        inputs = as_inputs(inputs, self.config.out_size)
        size = self.config.out_size
        if inputs.rgb is None:
            raise InputError("the rgb-fcn head needs the tile's RGB (HeadInputs.rgb), and got none")
        if tuple(inputs.rgb.shape[1:]) != (3, size, size):
            raise InputError(f"rgb-fcn: RGB of shape {tuple(inputs.rgb.shape[1:])}, the head expects (3, {size}, "
                             f"{size})")
        x = self.upsample(self.narrow(self.fused(inputs)), size)  # (B, r, H, W)
        rgb = inputs.rgb.to(device=x.device, dtype=x.dtype) * 2 - 1  # [0, 1] -> [-1, 1]
        return self.classify(self.refine(torch.cat([x, rgb], dim=1)))  # (B, K, H, W)
