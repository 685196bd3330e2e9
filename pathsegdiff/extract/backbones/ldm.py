"""The UNet latent diffusion backbone (:class:`LDM`) and the reference model's SSL projection.

Every UNet loader (``tiny.py``, ``compvis.py``, ``diffusers_unet.py``) returns
an :class:`LDM`; the featurize path talks to it through :class:`Backbone`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones.base import (
    Backbone,
    config_sha256,
    state_dict_sha256,
)
from pathsegdiff.extract.backbones.unet_blocks import (
    partial_forward,
    unet_block_shapes,
    unet_blocks,
    unet_stride,
)

__all__ = ["LDM", "SSLProjection", "config_sha256", "scaled_linear_alphas_cumprod", "state_dict_sha256"]


class SSLProjection(nn.Module):
    """The reference model's ``cond_stage_model`` (``SSLEmbedder``/``PatchEmbedder``).

    Each embedding is L2-normalised (when the config says so) and projected
    to the UNet's context width; the tokens are stacked.  The region token is
    fed zeros at inference, as the reference does when no region embedding is
    given; a null condition is a zero patch embedding (the training recipe
    zeroed embeddings with p=0.1, so that is in-distribution).
    """

    def __init__(self, patch_dim: int, context_dim: int, region_dim: int | None = 768, normalize: bool = True):
        super().__init__()
        self.patch_fc = nn.Linear(patch_dim, context_dim)
        self.region_fc = nn.Linear(region_dim, context_dim) if region_dim else None
        self.normalize = normalize

    @property
    def tokens(self) -> int:
        return 1 if self.region_fc is None else 2

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_fc.weight.dtype
        patch = patch.to(dtype)
        if self.normalize:
            patch = nn.functional.normalize(patch, dim=-1)  # a zero vector stays zero
        tokens = [self.patch_fc(patch)]
        if self.region_fc is not None:
            region = torch.zeros(patch.shape[0], self.region_fc.in_features, device=patch.device, dtype=dtype)
            tokens.append(self.region_fc(region))
        return torch.stack(tokens, dim=1)


class LDM(Backbone):
    """A UNet latent diffusion model: first stage, UNet, noise schedule and conditioning together.

    ``first_stage`` maps rgb in [-1, 1] to the unscaled latent; ``encode``
    multiplies by ``scale_factor``.  Conditioning is either ``cond`` (a
    projection of a per-tile SSL embedding, ``ssl_dim`` > 0) or a fixed
    ``null_context`` (e.g. Stable Diffusion's empty-prompt embedding).
    The loaders (``tiny.py``, ``compvis.py``, ``diffusers_unet.py``) build it.
    """

    default_blocks = ("up1", "up2")

    def __init__(
        self,
        *,
        model_id: str,
        weights_sha256: str,
        config_sha256: str,
        unet: nn.Module,
        first_stage: Callable[[torch.Tensor], torch.Tensor],
        first_stage_module: nn.Module,
        scale_factor: float,
        alphas_cumprod: torch.Tensor,
        latent_channels: int,
        downsample: int,
        context_tokens: int,
        context_dim: int,
        ssl_dim: int,
        cond: SSLProjection | None = None,
        null_context: torch.Tensor | None = None,
        untrained: bool = False,
        notes: tuple[str, ...] = (),
    ):
        if (cond is None) == (null_context is None):
            raise ModelLoadError(f"{model_id}: an LDM needs exactly one of an SSL projection or a fixed context")
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.config_sha256 = config_sha256
        self.unet = unet.eval().requires_grad_(False)
        self._first_stage = first_stage
        self.first_stage_module = first_stage_module.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.alphas_cumprod = alphas_cumprod
        self.latent_channels = latent_channels
        self.downsample = downsample
        self.context_tokens = context_tokens
        self.context_dim = context_dim
        self.ssl_dim = ssl_dim
        self.cond = cond.eval().requires_grad_(False) if cond is not None else None
        self.null_context = null_context
        self.untrained = untrained
        self.notes = notes

    def modules(self) -> dict[str, nn.Module]:
        mods = {"unet": self.unet, "first_stage": self.first_stage_module}
        if self.cond is not None:
            mods["cond"] = self.cond
        return mods

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "LDM":
        super().to(device, dtype)
        if self.null_context is not None:
            self.null_context = self.null_context.to(device=device, dtype=dtype or self.null_context.dtype)
        return self

    def blocks(self) -> list[str]:
        return unet_blocks(self.unet)

    def block_shapes(self, tile_size: int) -> dict[str, tuple[int, int, int]]:
        step = self.downsample * unet_stride(self.unet)
        if tile_size % step:
            raise ConfigError(f"tile size {tile_size} must be a multiple of {step} for model {self.model_id}")
        return unet_block_shapes(self.unet, tile_size // self.downsample)

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb float in [-1, 1], (B, 3, H, W) -> scaled latent (B, c, H/f, W/f)."""
        param = next(self.first_stage_module.parameters())
        z = self._first_stage(rgb.to(device=param.device, dtype=param.dtype))
        return z * self.scale_factor if self.scale_factor != 1.0 else z

    @torch.no_grad()
    def context(self, ssl: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, ssl_dim) embedding or None (null) -> (B, context_tokens, context_dim)."""
        if self.cond is None:
            return self.null_context.expand(batch, -1, -1)
        weight = self.cond.patch_fc.weight
        if ssl is None:
            ssl = torch.zeros(batch, self.ssl_dim, device=weight.device, dtype=weight.dtype)
        if ssl.shape != (batch, self.ssl_dim):
            raise ModelLoadError(
                f"{self.model_id}: conditioning embedding has shape {tuple(ssl.shape)}, expected ({batch}, {self.ssl_dim})"
            )
        return self.cond(ssl.to(weight.device))

    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        return partial_forward(self.unet, x, timestep, context, blocks)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context": [self.context_tokens, self.context_dim],
                "scale_factor": self.scale_factor}


def scaled_linear_alphas_cumprod(beta_start: float, beta_end: float, steps: int = 1000) -> torch.Tensor:
    """The CompVis/SD ``scaled_linear`` schedule: betas = linspace(sqrt(b0), sqrt(b1))^2."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)
