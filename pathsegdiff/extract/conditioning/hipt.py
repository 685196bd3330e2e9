"""HIPT ViT-S/16 (``vit256_small_dino.pth``) as a conditioner: the tile's 384-d CLS embedding.

The weights are a DINO checkpoint (``teacher`` entry, keys possibly prefixed
``module.`` / ``backbone.``).  They are mapped onto transformers'
``ViTModel`` (timm is not usable here: it pulls torchvision), the fused
``qkv`` split into query/key/value.  HIPT's ViT was built for 224 px
(14x14 patches + CLS); DINO interpolates the position embedding to the
input grid at every forward, and we do that once, the same way (bicubic,
DINO's ``+0.1`` scale), for 256 px tiles.  Input: pixels in [0, 1]
normalised with mean = std = 0.5, resized to 256 px when tiles have
another size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from pathsegdiff.errors import MissingDependencyError, ModelLoadError
from pathsegdiff.extract.backbones.checkpoint_io import read_state_dict
from pathsegdiff.extract.conditioning.base import Conditioner, file_sha256

INPUT_SIZE = 256
PATCH = 16
DIM, DEPTH, HEADS, MLP = 384, 12, 6, 1536
PREFIXES = ("module.", "backbone.")


def dino_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of a DINO checkpoint, prefixes and the DINO head removed."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raw = read_state_dict(path)  # Lightning-style or safetensors; raises a clear error itself
    for entry in ("teacher", "state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(entry), dict):
            raw = raw[entry]
            break
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: not a DINO checkpoint (no state dict inside)")
    out = {}
    for key, value in raw.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        if not key.startswith("head."):
            out[key] = value
    return out


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + n*n, D) -> (1, 1 + grid*grid, D), as DINO's ``interpolate_pos_encoding``."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    n = int(math.isqrt(patch_pos.shape[1]))
    if n * n != patch_pos.shape[1]:
        raise ModelLoadError(f"position embedding with {patch_pos.shape[1]} patches is not a square grid")
    if n == grid:
        return pos_embed
    scale = (grid + 0.1) / n  # DINO's offset avoids a floating point error in the output size
    patch_pos = nn.functional.interpolate(
        patch_pos.reshape(1, n, n, -1).permute(0, 3, 1, 2).float(), scale_factor=(scale, scale), mode="bicubic"
    )
    if patch_pos.shape[-1] != grid:
        raise ModelLoadError(f"position embedding interpolation gave {patch_pos.shape[-1]} instead of {grid}")
    return torch.cat([cls_pos.float(), patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


# Block-level names in transformers' ViTModel: 4.x and 5.x differ.
LAYOUT_V4 = ("encoder.layer.{i}.", {"norm1": "layernorm_before", "attn.proj": "attention.output.dense",
             "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
             "q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value"})
LAYOUT_V5 = ("layers.{i}.", {"norm1": "layernorm_before", "attn.proj": "attention.o_proj",
             "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj"})


def to_transformers(sd: dict[str, torch.Tensor], path: Path, grid: int, layout=LAYOUT_V5) -> dict[str, torch.Tensor]:
    """DINO ViT keys -> transformers ViTModel keys (missing keys raise a ModelLoadError)."""
    needed = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    per_block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    needed += [f"blocks.{i}.{p}.{w}" for i in range(DEPTH) for p in per_block for w in ("weight", "bias")]
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ModelLoadError(
            f"{path}: not a DINO ViT-S/16 checkpoint: {len(missing)} keys missing, e.g. {missing[:4]} "
            f"(found e.g. {sorted(sd)[:4]})"
        )
    if tuple(sd["cls_token"].shape) != (1, 1, DIM) or tuple(sd["patch_embed.proj.weight"].shape) != (DIM, 3, PATCH, PATCH):
        raise ModelLoadError(f"{path}: not a ViT-S/16 (cls_token {tuple(sd['cls_token'].shape)}, "
                             f"patch_embed {tuple(sd['patch_embed.proj.weight'].shape)})")
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": interpolate_pos_embed(sd["pos_embed"], grid),
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    block_prefix, names = layout
    for i in range(DEPTH):
        src, dst = f"blocks.{i}.", block_prefix.format(i=i)
        for w in ("weight", "bias"):
            for old in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{dst}{names[old]}.{w}"] = sd[f"{src}{old}.{w}"]
            q, k, v = sd[f"{src}attn.qkv.{w}"].chunk(3, dim=0)  # DINO's qkv rows are [q; k; v]
            for name, part in (("q", q), ("k", k), ("v", v)):
                out[f"{dst}{names[name]}.{w}"] = part
    return {k: v.float() for k, v in out.items()}


def build_vit(path: Path) -> nn.Module:
    try:
        from transformers import ViTConfig, ViTModel
    except ImportError as exc:
        raise MissingDependencyError("transformers", "conditioning", "HIPT conditioning") from exc
    config = ViTConfig(image_size=INPUT_SIZE, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH,
                       num_attention_heads=HEADS, intermediate_size=MLP, qkv_bias=True, layer_norm_eps=1e-6,
                       hidden_act="gelu")
    model = ViTModel(config, add_pooling_layer=False)
    layout = LAYOUT_V5 if "layers.0.attention.q_proj.weight" in model.state_dict() else LAYOUT_V4
    weights = to_transformers(dino_state_dict(path), path, INPUT_SIZE // PATCH, layout)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{path}: weights do not fit ViT-S/16 (missing {missing[:4]}, unexpected {unexpected[:4]})")
    return model.eval().requires_grad_(False)


class HIPTConditioner(Conditioner):
    """CLS token of HIPT's ViT-256 for each tile (384-d, float32)."""

    def __init__(self, weights: Path, device: str = "cpu"):
        self.name = f"hipt:{file_sha256(weights)}"
        self.dim = DIM
        self.model = build_vit(weights).to(device)

    @torch.no_grad()
    def embed(self, rgb_uint8: torch.Tensor, tile_ids: list[str]) -> torch.Tensor:
        param = next(self.model.parameters())
        x = rgb_uint8.to(param.device).float() / 255.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        x = (x - 0.5) / 0.5
        out = self.model(pixel_values=x.to(param.dtype)).last_hidden_state[:, 0]
        return out.float().to(rgb_uint8.device)
