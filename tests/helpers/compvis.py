"""A CompVis latent-diffusion log dir written from random diffusers models (the loader's test input).

The reverse key mapping (diffusers -> CompVis ``openaimodel``/``autoencoder``
names) is written here independently of the loader, which uses diffusers'
forward converters.  Used by tests/extract/test_compvis_parity.py and by
tests/app/test_readme.py (the README's ``models/brca20x`` stand-in).
"""

from __future__ import annotations

import torch
import yaml
from diffusers import UNet2DConditionModel, VQModel

from pathsegdiff.extract.backbones.compvis_config import unet_config

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_compvis(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> CompVis UNetModel keys."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        n = 2 if ".".join(parts[:2]) in fixed else 1
        if ".".join(parts[:n]) in fixed:
            new = fixed[".".join(parts[:n])] + "." + ".".join(parts[n:])
        elif parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{1 + i * (layers + 1) + layers}.0.op.{rest.removeprefix('conv.')}"
            else:
                k = 1 + i * (layers + 1) + j
                new = f"input_blocks.{k}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"input_blocks.{k}.1.{rest}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}.{_rename(rest, RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
                new = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attn else 1}.{rest}"
            else:
                k = i * (layers + 1) + j
                new = f"output_blocks.{k}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"output_blocks.{k}.1.{rest}"
        else:
            raise AssertionError(f"unmapped UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vq_to_compvis(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers VQModel keys -> CompVis VQModel keys (1x1 conv attention weights)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        part, rest = parts[0], ".".join(parts[1:])
        if part in ("quant_conv", "post_quant_conv", "quantize"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{part}.norm_out.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            i, kind, rest = int(parts[2]), parts[3], ".".join(parts[5:])
            level, group = (i, "down") if parts[1] == "down_blocks" else (levels - 1 - i, "up")
            if kind in ("downsamplers", "upsamplers"):
                new = f"{part}.{group}.{level}.{'downsample' if group == 'down' else 'upsample'}.{rest}"
            else:
                new = f"{part}.{group}.{level}.block.{parts[4]}.{_rename(rest, VAE_RESNET)}"
        elif parts[1] == "mid_block":
            kind, j, rest = parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"{part}.mid.block_{j + 1}.{rest}"
            else:
                new = f"{part}.mid.attn_1.{_rename(rest, VAE_ATTN)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            raise AssertionError(f"unmapped VQ key {key}")
        out["first_stage_model." + new] = value
    return out


def _seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # nonzero everywhere, so no mapping error hides behind a zero layer
            p.copy_(torch.randn(p.shape, generator=gen) * (p[0].numel() if p.ndim > 1 else 25) ** -0.5)
    return module.eval()


UNET_YAML = dict(image_size=8, in_channels=3, out_channels=3, model_channels=32, attention_resolutions=[2, 4],
                 num_res_blocks=2, channel_mult=[1, 2, 3], num_heads=1, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=16, use_checkpoint=True, use_fp16=True)
VQ_YAML = dict(embed_dim=3, n_embed=16, ddconfig=dict(double_z=False, z_channels=3, resolution=32, in_channels=3,
               out_ch=3, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0),
               lossconfig={"target": "torch.nn.Identity"})


def project_yaml(unet_params: dict) -> dict:
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "conditioning_key": "crossattn",
        "scale_factor": 1.0,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet_params},
        "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": VQ_YAML},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.SSLEmbedder", "params": {
            "patch_ssl_key": "feat_20x", "region_ssl_key": "feat_5x", "patch_embed_dim": 24,
            "region_embed_dim": 12, "normalize_ssl": True}}}}}


def write_log_dir(root, unet_params, heads, ckpt_extra=None):
    """A CompVis log dir from random diffusers models; returns (unet, vq, cond state dict)."""
    config = unet_config(unet_params) | {"attention_head_dim": heads}
    unet = _seeded(UNet2DConditionModel(**config), 1)
    vq = _seeded(VQModel(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                         latent_channels=3, num_vq_embeddings=16, norm_num_groups=32, scaling_factor=1.0), 2)
    gen = torch.Generator().manual_seed(3)
    cond = {"cond_stage_model.patch_fc.weight": torch.randn(16, 24, generator=gen),
            "cond_stage_model.patch_fc.bias": torch.randn(16, generator=gen),
            "cond_stage_model.region_fc.weight": torch.randn(16, 12, generator=gen),
            "cond_stage_model.region_fc.bias": torch.randn(16, generator=gen)}
    sd = unet_to_compvis(unet.state_dict(), unet_params["num_res_blocks"]) | vq_to_compvis(vq.state_dict(), 2) | cond
    (root / "configs").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "configs" / "2024-01-01T00-00-00-project.yaml").write_text(yaml.safe_dump(project_yaml(unet_params)))
    torch.save({"state_dict": sd, "global_step": 7, **(ckpt_extra or {})}, root / "checkpoints" / "last.ckpt")
    return unet, vq, cond
