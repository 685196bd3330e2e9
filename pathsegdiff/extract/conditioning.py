"""Per-tile conditioning embeddings: null, HIPT ViT-S/16, or precomputed.

A :class:`Conditioner` turns a batch of uint8 tiles into the (B, dim) SSL
embedding that :meth:`LDM.context` projects to the UNet's context.  Its
``name`` goes into the store identity: it names the kind and, for files,
the first 12 hex of the file's sha256, so other weights or embeddings make
another store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.ldm import LDM

CONDITIONING_KINDS = ("null", "hipt:PATH", "precomputed:PATH")


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


def _existing_file(path_text: str, what: str) -> Path:
    if not path_text:
        raise ConfigError(f"--conditioning {what}: needs a path, e.g. {what}:/path/to/file")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"{path}: {what} file not found")
    return path


def make_conditioner(arg: str, ldm: LDM, device: str = "cpu") -> Conditioner:
    """``null`` | ``hipt:PATH`` (vit256_small_dino.pth) | ``precomputed:PATH`` (.npy/.zarr/.h5)."""
    kind, _, rest = str(arg).partition(":")
    if kind == "null" and not rest:
        return NullConditioner(ldm.ssl_dim)
    if kind in ("hipt", "precomputed") and ldm.ssl_dim == 0:
        raise ConfigError(
            f"model {ldm.model_id} is not conditioned on an SSL embedding; use --conditioning null"
        )
    if kind == "hipt":
        weights = _existing_file(rest, "hipt")
        from pathsegdiff.extract.hipt import HIPTConditioner  # needs transformers, an optional extra

        cond: Conditioner = HIPTConditioner(weights, device=device)
    elif kind == "precomputed":
        from pathsegdiff.extract.precomputed import PrecomputedConditioner

        if not rest:
            raise ConfigError("--conditioning precomputed: needs a path, e.g. precomputed:/path/to/embeddings.npy")
        cond = PrecomputedConditioner(Path(rest).expanduser())
    else:
        raise ConfigError(f"unknown conditioning {arg!r}; expected one of {', '.join(CONDITIONING_KINDS)}")
    if cond.dim != ldm.ssl_dim:
        raise ConfigError(
            f"{rest}: embeddings have {cond.dim} dimensions, model {ldm.model_id} expects {ldm.ssl_dim}"
        )
    return cond
