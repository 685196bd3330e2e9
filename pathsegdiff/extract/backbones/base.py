"""What a model family implements so that pathsegdiff can take features from it.

A :class:`Backbone` is a loaded model: it encodes a tile, builds the
conditioning context, names the blocks it offers with their shapes for a
tile size, and runs a partial forward that returns the requested blocks and
nothing after them.  It knows nothing of batches, noise seeds, stores or
progress: those belong to ``featurize.py`` and ``run/``.

A :class:`Family` says how to get a backbone: built-in seeded ids (``tiny``,
``tiny-dit``, ``tiny-vit``) and/or a test that recognises a model directory
plus its loader.  ``registry.py`` lists the families.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathsegdiff.errors import ConfigError


class Backbone(ABC):
    """A loaded model of one family, ready to give named feature maps of a tile.

    Subclasses set the attributes below in ``__init__``.  ``alphas_cumprod``
    is the noise schedule of a diffusion model; a model without one (a ViT
    foundation model) is run on the clean tile once, at timestep 0.
    """

    model_id: str
    weights_sha256: str
    config_sha256: str
    ssl_dim: int = 0  # width of the per-tile embedding the model is conditioned on; 0: none
    latent_channels: int = 0  # channels of ``encode``'s output, stored with --store-latent
    downsample: int = 1  # tile pixels per latent pixel
    alphas_cumprod: torch.Tensor | None = None
    default_blocks: tuple[str, ...] = ()
    untrained: bool = False
    notes: tuple[str, ...] = ()  # user-facing remarks from the loader

    @property
    def is_diffusion(self) -> bool:
        return self.alphas_cumprod is not None

    @property
    def default_timesteps(self) -> tuple[int, ...]:
        # DDPM-seg's middle-to-late decoder blocks at small t; a non-diffusion model sees the clean tile
        return (50, 150) if self.is_diffusion else (0,)

    @abstractmethod
    def modules(self) -> Mapping[str, nn.Module]:
        """Every module with weights, by a stable name (hashing, moving to a device)."""

    @abstractmethod
    def blocks(self) -> list[str]:
        """Names of the blocks this model offers, in the order it computes them."""

    @abstractmethod
    def block_shapes(self, tile_size: int) -> dict[str, tuple[int, int, int]]:
        """(C, h, w) of every block for a square tile of ``tile_size`` pixels."""

    @abstractmethod
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] -> the model's input space (a latent, or normalised pixels)."""

    @abstractmethod
    def context(self, ssl: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """(B, ssl_dim) embedding, or None for the null condition -> what ``forward_blocks`` is conditioned on."""

    @abstractmethod
    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Run the model on ``x`` (noised latent or encoded tile) only as far as the last of ``blocks``."""

    def input_size(self, tile_size: int, requested: int | None = None) -> int:
        """The side, in pixels, a ``tile_size`` tile is resized to before ``encode``: the tile's own here.

        A model with a fixed patch grid (a ViT) overrides it; any other refuses a ``requested`` size.
        """
        if requested is not None:
            raise ConfigError(f"model {self.model_id} takes tiles at their own size; an input size (--vit-input-size) "
                              "applies to ViT models only")
        return tile_size

    # -- shared by every family --------------------------------------------------
    def check_blocks(self, blocks: Sequence[str]) -> None:
        valid = self.blocks()
        unknown = [b for b in blocks if b not in valid]
        if unknown:
            raise ConfigError(f"model {self.model_id} has no block(s) {unknown}; valid blocks: {', '.join(valid)}")

    def last_block(self, blocks: Sequence[str]) -> str:
        order = self.blocks()
        return max(blocks, key=order.index)

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.modules().values())).parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(next(iter(self.modules().values())).parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "Backbone":
        kwargs = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        for module in self.modules().values():  # nn.Module.to: diffusers' override warns on every dtype cast
            nn.Module.to(module, **kwargs)
        return self

    def describe(self) -> dict[str, Any]:
        """Short facts for provenance and the CLI's pre-flight line."""
        return {"model_id": self.model_id, "family": type(self).__name__, "weights_sha256": self.weights_sha256,
                "config_sha256": self.config_sha256, "latent_channels": self.latent_channels,
                "downsample": self.downsample, "ssl_dim": self.ssl_dim, "diffusion": self.is_diffusion,
                "untrained": self.untrained, "notes": list(self.notes)}


@dataclass(frozen=True)
class Family:
    """How to get backbones of one kind: built-in seeded ids, and/or a loader for a recognised directory."""

    name: str
    builtin: Mapping[str, Callable[[], Backbone]] = field(default_factory=dict)
    recognises: Callable[[Path], bool] | None = None
    load: Callable[[Path], Backbone] | None = None
    layout: str = ""  # what a directory of this family holds, for the error that lists every family


def state_dict_sha256(*modules: nn.Module | None) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor, in a fixed order."""
    h = hashlib.sha256()
    for index, module in enumerate(modules):
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{index}:{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def config_sha256(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
