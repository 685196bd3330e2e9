"""A stand-in for the GPU: the reference model's block shapes at a given tile rate, computing nothing.

:class:`SimulatedDevice` is a backbone with the reference model's block
shapes (``up1`` 576x32x32 + ``up2`` 384x64x64 at t = 50 and 150) that sleeps
for the GPU's time per batch and hands back float16 features already in host
memory, as a DMA leaves them.  For a compact preset, :func:`with_bases` fits
the PCA bases on its output (what calibration would see) and
:func:`device_encoding` hands the loop codes encoded once beforehand, as a GPU
encodes before the copy (extract/device_encoding.py).  Used by bench/host_rate.py.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from pathsegdiff.extract.backbones.base import Backbone
from pathsegdiff.extract.backbones.ldm import scaled_linear_alphas_cumprod

REFERENCE_BLOCKS = {  # (C, h, w) at 256 px (docs/architecture.md)
    "mid": (960, 8, 8), "up0.pre": (960, 8, 8), "up0": (960, 16, 16), "up1.pre": (576, 16, 16),
    "up1": (576, 32, 32), "up2.pre": (384, 32, 32), "up2": (384, 64, 64), "up3": (192, 64, 64),
}


class SimulatedDevice(Backbone):
    """A backbone with the reference model's shapes that takes ``1 / rate`` s per tile and computes nothing."""

    model_id = "simulated-device"
    weights_sha256 = config_sha256 = "0" * 64
    ssl_dim, latent_channels, downsample = 384, 3, 4
    default_blocks = ("up1", "up2")
    untrained = True

    def __init__(self, rate: float, channel_divisor: int = 1, max_batch: int = 64):
        self.seconds_per_tile = 0.0 if rate == float("inf") else 1.0 / rate
        self.alphas_cumprod = scaled_linear_alphas_cumprod(0.0015, 0.0195)
        self.shapes = {b: (c // channel_divisor, h, w) for b, (c, h, w) in REFERENCE_BLOCKS.items()}
        self._module = nn.Linear(1, 1)
        gen = torch.Generator().manual_seed(0)  # made here, before any timing: the device's output buffers
        self._out = {b: torch.randn((max_batch, *self.shapes[b]), generator=gen).half() for b in self.default_blocks}

    def modules(self):
        return {"stand_in": self._module}

    def blocks(self):
        return list(self.shapes)

    def block_shapes(self, tile_size: int):
        f = tile_size // 256
        return {b: (c, h * f, w * f) for b, (c, h, w) in self.shapes.items()}

    def encode(self, rgb):
        time.sleep(self.seconds_per_tile * len(rgb))  # the batch's GPU time, spent where the host waits for it
        return rgb[:, :3, ::4, ::4]

    def context(self, ssl, batch):
        return None

    def forward_blocks(self, x, timestep, context, blocks):
        out = {}
        for b in blocks:
            out[b] = self._out[b][: len(x)]  # already in host memory, as after a DMA: no copy
        return out


@contextlib.contextmanager
def device_encoding(w, device: SimulatedDevice, host_encode: bool):
    """A compact store: the loop gets the device's features encoded once beforehand, as a GPU hands them over."""
    from pathsegdiff.extract.device_encoding import DeviceEncoder
    from pathsegdiff.extract.run import loop

    if w.encoding.is_default or host_encode:
        yield
        return
    full = DeviceEncoder(w.encoding, "cpu")({t: dict(device._out) for t in (50, 150)})

    class Precomputed:
        def __call__(self, features):
            n = len(next(iter(next(iter(features.values())).values())))
            return {k: x[:n] for k, x in full.items()}

    made = loop.device_encoder
    loop.device_encoder = lambda w, dev: Precomputed()
    try:
        yield
    finally:
        loop.device_encoder = made


def with_bases(schema, device: SimulatedDevice, preset: str):
    """A PCA preset's schema and bases, fitted on the device's own output (what calibration would see)."""
    from pathsegdiff.extract.run.calibrate import with_basis
    from pathsegdiff.store.encodings import bases_sha256, fit_bases, parse_preset

    enc = parse_preset(preset)
    if not enc.uses_pca:
        return schema, None
    k = enc.stored_channels(REFERENCE_BLOCKS["up1"][0])
    bases = fit_bases({(t, b): device._out[b][:8].float().numpy() for t in (50, 150) for b in device.default_blocks}, k)
    return with_basis(schema, bases_sha256(bases)), bases
