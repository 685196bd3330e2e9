"""Per-tile conditioning embeddings: null, HIPT ViT-S/16, or precomputed.

A :class:`Conditioner` turns a batch of uint8 tiles into the (B, dim) SSL
embedding that the backbone's ``context`` turns into what the model is conditioned on.  Its
``name`` goes into the store identity: it names the kind and, for files,
the first 12 hex of the file's sha256, so other weights or embeddings make
another store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def file_sha256(path: Path, prefix: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:prefix]


class Conditioner:
    """Base: ``embed`` maps (B, 3, H, W) uint8 tiles and their ids to (B, dim) float32."""

    name: str
    dim: int

    def embed(self, rgb_uint8: torch.Tensor, tile_ids: list[str]) -> torch.Tensor:
        raise NotImplementedError


class NullConditioner(Conditioner):
    """Zeros: the reference model saw zeroed embeddings 10 % of the time in training."""

    def __init__(self, dim: int):
        self.name = "null"
        self.dim = dim

    def embed(self, rgb_uint8: torch.Tensor, tile_ids: list[str]) -> torch.Tensor:
        return torch.zeros(rgb_uint8.shape[0], self.dim, dtype=torch.float32, device=rgb_uint8.device)
