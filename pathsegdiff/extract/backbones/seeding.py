"""Seeded weights for the built-in tiny models, independent of torch's and diffusers' initialisers.

Each tensor is filled from a generator seeded by (model seed, tensor name)
with our own recipe, so the weights, and ``weights_sha256``, do not change
with the torch, diffusers or transformers version.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn


def seed_tensor_(seed: int, name: str, tensor: torch.Tensor) -> None:
    """Fill one tensor from a generator seeded by (seed, name)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    gen = torch.Generator().manual_seed(key)
    uniform = torch.rand(tensor.shape, generator=gen, dtype=torch.float64) * 2 - 1
    if tensor.ndim >= 2:  # weights: variance 1/fan_in keeps activations O(1) through depth
        bound = math.sqrt(3.0 / (tensor[0].numel()))
    elif name.endswith("weight"):  # norm scales around 1
        uniform, bound = 1 + 0.1 * uniform, 1.0
    else:  # biases: small but nonzero, so every path carries signal
        bound = 0.05
    tensor.copy_((uniform * bound).to(tensor.dtype))


def seed_module(seed: int, prefix: str, module: nn.Module) -> None:
    """Seed every floating-point parameter and buffer of ``module``, named ``prefix.name``."""
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                seed_tensor_(seed, f"{prefix}.{name}", tensor.data)
