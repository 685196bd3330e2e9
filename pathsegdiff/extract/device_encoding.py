"""A compact store's encoding done in torch where the features are made, so a GPU host copies and writes codes.

``store/encodings/`` encodes with numpy on the host, in the writer thread:
about 50 CPU ms per reference tile for ``pca64-int8`` on the development
machine (bench/host_rate.py), far from 600 tiles/s, while the same work is
about 0.55 GFLOP per tile, nothing next to the model's 670.  On CUDA the
extraction loop (``run/loop.py``) therefore encodes here, before the copy to
the host, and hands the writer the stored arrays (``StoreWriter.write(...,
encoded=...)``); 8x fewer bytes then cross the bus as well.

The arithmetic is the numpy encoder's (projection onto the stored basis,
then per tile and channel ``scale = (hi - lo) / 255``, ``offset = lo + 128 *
scale``, codes rounded half to even), in float32.  Summation order differs
from numpy's, so a code may differ by one step where a value lies on a
rounding boundary: a store encoded on a GPU equals a host-encoded one within
one quantisation step, not bit for bit.  The CPU path (and CI) keeps the
numpy encoder, whose output is bit-identical across batch sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pathsegdiff.store.encoded import StoreEncoding
from pathsegdiff.store.encodings.int8 import STEPS, ZERO_CODE


class DeviceEncoder:
    """Encodes ``features[t][block]`` (B, C, h, w) tensors to the store's arrays, on the tensors' device."""

    def __init__(self, encoding: StoreEncoding, device: torch.device | str):
        self.encoding = encoding
        self.device = torch.device(device)
        self.bases: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        for (t, b), basis in encoding.bases.items():
            self.bases[(t, b)] = (torch.from_numpy(basis.components).to(self.device),
                                  torch.from_numpy(basis.mean).to(self.device))

    def __call__(self, features: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        int8 = self.encoding.encoding.int8
        for t, blocks in features.items():
            for b, x in blocks.items():
                values = x.float()
                if (int(t), b) in self.bases:
                    components, mean = self.bases[(int(t), b)]
                    values = torch.einsum("kc,bchw->bkhw", components, values - mean[None, :, None, None])
                names = self.encoding.stored_arrays(t, b)  # the store's arrays for this block: values[, scale/offset]
                if int8:
                    out[names[0]], out[names[1]] = quantise(values)
                else:
                    out[names[0]] = values.half()
        return out


def quantise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) float32 -> int8 codes and (B, 2, K) float32 scale/offset, as ``encodings/int8.py``."""
    flat = x.flatten(2)
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    scale = (hi - lo) / STEPS
    offset = lo + ZERO_CODE * scale
    constant = scale == 0
    safe = torch.where(constant, torch.ones_like(scale), scale)
    codes = torch.round((flat - offset[..., None]) / safe[..., None]).clamp_(-128, 127).to(torch.int8)
    codes[constant] = 0  # a constant channel: every value is the offset (lo), exactly
    offset = torch.where(constant, lo, offset)
    return codes.reshape(x.shape), torch.stack([scale, offset], dim=1)
