"""A reference head that ignores the features: rgb-fcn's full-resolution layers on the RGB alone.

A plug-in (docs/heads.md): ``pathsegdiff train STORE -o RUN --head bench/rgb_only_head.py:RGBOnly``.  Two 3x3
convs of 16 channels (GroupNorm, ReLU) on the stored RGB scaled to [-1, 1], then a 1x1 conv to the classes.  On
the demo, whose labels are computed from colour, it measures how far colour alone goes: a ceiling for the
features' colour content, not a competitor (docs/heads.md, docs/he-tiny.md).
"""
from torch import nn


def block(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8 if c_out % 8 == 0 else 1, c_out), nn.ReLU(inplace=True)]


class RGBOnly(nn.Module):
    needs_rgb = True

    def __init__(self, spec, width=16, layers=2):
        super().__init__()
        mods, c = [], 3
        for _ in range(layers):
            mods += block(c, width)
            c = width
        self.body = nn.Sequential(*mods)
        self.classify = nn.Conv2d(c, spec.n_classes, 1)

    def forward(self, inputs):
        return self.classify(self.body(inputs.rgb * 2 - 1))
