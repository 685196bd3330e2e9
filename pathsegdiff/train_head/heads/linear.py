"""The linear probe: a 1x1 conv on the concatenation of all blocks upsampled to label resolution."""

from __future__ import annotations

import torch
from torch import nn

from pathsegdiff.train_head.heads.base import SegHead
from pathsegdiff.train_head.heads.protocol import Features, HeadInputs


class LinearHead(SegHead):
    """Linear probe.

    Bilinear upsampling is linear and per channel, so it commutes with a 1x1
    conv: each block is mapped to K channels at its native size and the
    upsampled results are summed, which is the same function at a fraction of
    the memory.  A non-affine BatchNorm standardises each input channel first
    (as in MAE's linear probing); at evaluation it is a fixed affine map, so
    the probe stays linear.
    """

    def __init__(self, config):
        super().__init__(config)
        self.norm = nn.ModuleDict({n: nn.BatchNorm2d(c, affine=False) for n, c in config.in_channels.items()})
        # One bias in total, not one per block.
        self.weight = nn.ModuleDict({n: nn.Conv2d(c, config.n_classes, 1, bias=False)
                                     for n, c in config.in_channels.items()})
        self.bias = nn.Parameter(torch.zeros(config.n_classes))

    def forward(self, inputs: HeadInputs | Features) -> torch.Tensor:
        out = self.bias.view(1, -1, 1, 1)
        for b, x in zip(self.config.blocks, self.stack(inputs)):
            out = out + self.upsample(self.weight[b.name](self.norm[b.name](x)), self.config.out_size)
        return out
