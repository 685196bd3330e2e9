"""A ViT foundation model in the DINOv2/UNI layout (:class:`FoundationViT`): patch-token maps of chosen layers.

The model is transformers' ``Dinov2Model`` or ``Dinov2WithRegistersModel``
(UNI-2h and other register models).  It is not a diffusion model: it sees
the clean tile once, at timestep 0, and is conditioned on nothing.

Blocks are ``layer0`` .. ``layer{N-1}``: the tokens after transformer layer
``i``, passed through the model's final LayerNorm, with the CLS and register
tokens dropped and the patch tokens laid out as a (C, H/p, W/p) map.  Every
layer gets the final norm, as DINOv2's ``get_intermediate_layers(norm=True)``
(its linear segmentation evaluation) and transformers' ``Dinov2Backbone``
do, so all layers come on one scale; ``layer{N-1}`` is then exactly the
model's ``last_hidden_state``.

The position table, trained for ``config.image_size``, is resampled
bicubically to the input's patch grid by the embeddings at every forward (as
timm, which UNI was trained with, does), so any input that is a whole number
of patches works.

A tile that is not a whole number of patches is resized first (by the
featurizer, see :meth:`FoundationViT.input_size`): by default to the largest
multiple of the patch size not above the tile (252 px for a 256 px tile and
patch 14, an 18 x 18 grid), or to a size the user sets (224, UNI's training
size: 16 x 16); never to ``config.image_size`` (518 for the DINOv2
checkpoints).  A tile already a whole number of patches (256 px at patch 16)
is not resized.  The maps are stored on the grid they come out at; the
store's identity holds that grid, and with the patch size (in the model's
config hash) it fixes the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones.base import (
    Backbone,
    config_sha256,
    state_dict_sha256,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what DINOv2 and UNI normalise with
IMAGENET_STD = (0.229, 0.224, 0.225)

# Config fields that change the features; the rest (init values, dropout, backbone options) do not.
FEATURE_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                       "mlp_ratio", "hidden_act", "layer_norm_eps", "image_size", "patch_size", "num_channels",
                       "qkv_bias", "use_swiglu_ffn", "num_register_tokens")


def default_layers(n_layers: int) -> tuple[str, ...]:
    """The last layer (what linear probes of foundation models read) and one at three quarters of the depth.

    A later-middle layer keeps more local detail than the last (DINOv2's
    segmentation probes read the last four); two blocks, like the UNet's
    default, keep a store at 2 x C x (T/p)^2 values per tile.  For 4 layers
    (tiny-vit): layer2, layer3; 12: layer8, layer11; 24: layer17, layer23.
    """
    late_middle = max(0, round(0.75 * n_layers) - 1)
    return tuple(f"layer{i}" for i in sorted({late_middle, n_layers - 1}))


def square_patch(config: Any) -> int:
    patch = config.patch_size
    if not isinstance(patch, int):
        if len(set(patch)) != 1:
            raise ModelLoadError(f"patch size {tuple(patch)} is not square; only square patches are supported")
        patch = patch[0]
    return int(patch)


class FoundationViT(Backbone):
    """A DINOv2-layout ViT: ImageNet-normalised pixels in, per-layer patch-token maps out."""

    alphas_cumprod = None
    latent_channels = 0  # ``encode`` gives normalised pixels, not a latent worth storing
    downsample = 1  # ``encode`` keeps the tile's resolution; the feature stride is the patch size
    ssl_dim = 0

    def __init__(self, *, model_id: str, model: nn.Module, pixel_mean: Sequence[float] = IMAGENET_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_STD, untrained: bool = False, notes: tuple[str, ...] = ()):
        config = model.config
        self.model_id = model_id
        self.model = model.eval().requires_grad_(False)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ModelLoadError(f"{model_id}: pixel mean/std must be 3 values each, std > 0; "
                                 f"got {self.pixel_mean}, {self.pixel_std}")
        self.patch_size = square_patch(config)
        self.hidden_size = int(config.hidden_size)
        self.n_layers = int(config.num_hidden_layers)
        self.prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)  # CLS, then registers
        self.default_blocks = default_layers(self.n_layers)
        self.weights_sha256 = state_dict_sha256(self.model)
        # Hashed from the loaded model, so a built-in model saved with save_pretrained hashes the same.
        self.config_sha256 = config_sha256({**{k: getattr(config, k, None) for k in FEATURE_CONFIG_KEYS},
                                            "pixel_mean": self.pixel_mean, "pixel_std": self.pixel_std})
        self.untrained = untrained
        self.notes = notes

    def modules(self) -> dict[str, nn.Module]:
        return {"vit": self.model}

    def blocks(self) -> list[str]:
        return [f"layer{i}" for i in range(self.n_layers)]

    def input_size(self, tile_size: int, requested: int | None = None) -> int:
        """``requested``, else the largest multiple of the patch size not above ``tile_size`` (the tile's own
        size when it is one); a whole number of patches either way."""
        p = self.patch_size
        size = (tile_size // p) * p if requested is None else int(requested)
        if size < p or size % p:
            what = f"input size {requested}" if requested is not None else f"tile size {tile_size}"
            raise ConfigError(f"{what} gives no whole number of patches of {p} px for model {self.model_id}; "
                              f"choose an input size that is a multiple of {p} (e.g. {max(p, (224 // p) * p)})")
        return size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns of a tile; the tile must be a whole number of patches."""
        p = self.patch_size
        if height % p or width % p:
            raise ConfigError(f"tile size {height}x{width} must be a multiple of the patch size {p} "
                              f"for model {self.model_id}")
        return height // p, width // p

    def block_shapes(self, tile_size: int) -> dict[str, tuple[int, int, int]]:
        h, w = self.grid(tile_size, tile_size)
        return {name: (self.hidden_size, h, w) for name in self.blocks()}

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb float in [-1, 1], (B, 3, H, W) -> pixels normalised with the model's mean and std, same size."""
        param = next(self.model.parameters())
        rgb = rgb.to(device=param.device, dtype=torch.float32)
        mean = torch.tensor(self.pixel_mean, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(self.pixel_std, device=rgb.device).view(1, 3, 1, 1)
        return (((rgb + 1.0) / 2.0 - mean) / std).to(param.dtype)

    def context(self, ssl: torch.Tensor | None, batch: int) -> None:
        return None  # a foundation model is not conditioned

    @torch.no_grad()
    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Embeddings, then the encoder layers up to the last of ``blocks``; (B, C, H/p, W/p) per block."""
        if timestep != 0:
            raise ConfigError(f"model {self.model_id} is not a diffusion model: it runs at timestep 0 only")
        self.check_blocks(blocks)
        h, w = self.grid(x.shape[-2], x.shape[-1])
        wanted = {int(name.removeprefix("layer")): name for name in blocks}
        tokens = self.model.embeddings(x)  # (B, prefix + h*w, C), position table resampled to h x w
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.model.encoder.layer[: max(wanted) + 1]):
            tokens = layer(tokens)  # no attention mask: every token sees every token, as in Dinov2Model
            tokens = tokens[0] if isinstance(tokens, tuple) else tokens  # transformers 4.x returns a tuple
            if i in wanted:
                patches = self.model.layernorm(tokens[:, self.prefix_tokens:])  # (B, h*w, C), row-major grid
                out[wanted[i]] = patches.transpose(1, 2).reshape(x.shape[0], self.hidden_size, h, w)
        return {name: out[name] for name in blocks}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patch_size": self.patch_size, "layers": self.n_layers,
                "hidden_size": self.hidden_size, "register_tokens": self.prefix_tokens - 1,
                "pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std)}
