"""Translate a CompVis ``*-project.yaml`` into diffusers configs, without the network.

Why not ``from_single_file(original_config=...)``: it reads ``num_heads``
as the head count of every level and breaks on configs that give
``num_head_channels`` instead, and a wrong head count loads silently (the
weights have the same shapes) and gives wrong outputs.  Here the head count
of each level is computed the way CompVis' ``openaimodel.UNetModel`` does:
``num_heads`` when ``num_head_channels == -1``, else
``channels // num_head_channels``.  In diffusers' legacy naming the
per-level head count is ``attention_head_dim``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathsegdiff.errors import ModelLoadError

SUPPORTED_FIRST_STAGES = ("VQModelInterface", "VQModel", "AutoencoderKL")
SUPPORTED_COND_STAGES = ("SSLEmbedder", "PatchEmbedder")


def class_name(section: dict[str, Any]) -> str:
    return str(section.get("target", "")).rsplit(".", 1)[-1]


def model_params(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``model.params`` section, checked for what feature extraction supports."""
    try:
        model = config["model"]
        params = model["params"]
        unet = params["unet_config"]["params"]
        params["first_stage_config"]["params"]
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path}: not a CompVis LatentDiffusion config (missing {exc})") from exc
    if not class_name(model).endswith("LatentDiffusion"):
        raise ModelLoadError(f"{path}: unsupported model target {model.get('target')!r}; expected a LatentDiffusion")
    if params.get("conditioning_key", "crossattn") != "crossattn":
        raise ModelLoadError(f"{path}: conditioning_key {params['conditioning_key']!r} is not supported (crossattn only)")
    if params.get("beta_schedule", "linear") != "linear":
        raise ModelLoadError(f"{path}: beta_schedule {params['beta_schedule']!r} is not supported (linear only)")
    if not unet.get("use_spatial_transformer", False) or unet.get("context_dim") is None:
        raise ModelLoadError(f"{path}: only UNets with cross-attention (use_spatial_transformer, context_dim) are supported")
    if unet.get("num_classes") is not None or unet.get("dims", 2) != 2:
        raise ModelLoadError(f"{path}: class-conditional or non-2D UNets are not supported")
    if not isinstance(unet.get("num_res_blocks"), int):
        raise ModelLoadError(f"{path}: num_res_blocks must be one integer, got {unet.get('num_res_blocks')!r}")
    first = class_name(params["first_stage_config"])
    if first not in SUPPORTED_FIRST_STAGES:
        raise ModelLoadError(f"{path}: first stage {first!r} is not supported ({', '.join(SUPPORTED_FIRST_STAGES)})")
    cond = class_name(params.get("cond_stage_config") or {})
    if cond not in SUPPORTED_COND_STAGES:
        raise ModelLoadError(
            f"{path}: cond_stage_config {cond or 'none'!r} is not supported ({', '.join(SUPPORTED_COND_STAGES)})"
        )
    return params


def heads_per_level(unet: dict[str, Any]) -> list[int]:
    """Attention head count of each UNet level, as CompVis computes it."""
    num_heads = int(unet.get("num_heads", -1))
    head_channels = int(unet.get("num_head_channels", -1))
    widths = [unet["model_channels"] * m for m in unet["channel_mult"]]
    if head_channels == -1:
        if num_heads < 1:
            raise ModelLoadError("the UNet config gives neither num_heads nor num_head_channels")
        return [num_heads] * len(widths)
    bad = [w for w in widths if w % head_channels]
    if bad:
        raise ModelLoadError(f"num_head_channels {head_channels} does not divide level widths {bad}")
    return [w // head_channels for w in widths]


def unet_config(unet: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ``UNet2DConditionModel`` config equivalent to a CompVis ``UNetModel``."""
    mults = list(unet["channel_mult"])
    attention_ds = set(unet.get("attention_resolutions", []))
    with_attention = [2**i in attention_ds for i in range(len(mults))]  # level i runs at downsampling 2**i
    depth = unet.get("transformer_depth", 1)
    return {
        "sample_size": int(unet.get("image_size", 64)),
        "in_channels": int(unet["in_channels"]),
        "out_channels": int(unet["out_channels"]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in with_attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attention)],
        "block_out_channels": [int(unet["model_channels"]) * m for m in mults],
        "layers_per_block": int(unet["num_res_blocks"]),
        "cross_attention_dim": int(unet["context_dim"]),
        "attention_head_dim": heads_per_level(unet),
        "transformer_layers_per_block": depth if isinstance(depth, int) else list(depth),
        "use_linear_projection": bool(unet.get("use_linear_in_transformer", False)),
        "resnet_time_scale_shift": "scale_shift" if unet.get("use_scale_shift_norm", False) else "default",
        "norm_num_groups": 32,  # openaimodel's normalization() is GroupNorm(32)
        "flip_sin_to_cos": True,  # openaimodel's timestep_embedding is [cos, sin]
        "freq_shift": 0,
    }


def first_stage_config(first_stage: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(``vq`` | ``kl``, diffusers VQModel / AutoencoderKL config) for the CompVis first stage."""
    kind = "kl" if class_name(first_stage) == "AutoencoderKL" else "vq"
    params = first_stage["params"]
    dd = params["ddconfig"]
    n = len(dd["ch_mult"])
    config: dict[str, Any] = {
        "in_channels": int(dd["in_channels"]),
        "out_channels": int(dd["out_ch"]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [int(dd["ch"]) * m for m in dd["ch_mult"]],
        "layers_per_block": int(dd["num_res_blocks"]),
        "latent_channels": int(params["embed_dim"]) if kind == "kl" else int(dd["z_channels"]),
        "norm_num_groups": 32,
        "sample_size": int(dd.get("resolution", 256)),
        "scaling_factor": 1.0,  # the LDM's scale_factor is applied by LDM.encode, not by the VAE
    }
    if kind == "vq":
        config["num_vq_embeddings"] = int(params["n_embed"])
        config["vq_embed_dim"] = int(params["embed_dim"])
    return kind, config


def downsample_factor(first_stage: dict[str, Any]) -> int:
    return 2 ** (len(first_stage["params"]["ddconfig"]["ch_mult"]) - 1)


# The BRCA-20x HIPT model's unet_config / first_stage_config params (docs/architecture.md), for
# random-weight stand-ins of the reference size (benchmarks, shape checks).
REFERENCE_UNET = dict(image_size=64, in_channels=3, out_channels=3, model_channels=192,
                      attention_resolutions=[8, 4, 2], num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1,
                      use_spatial_transformer=True, transformer_depth=1, context_dim=512)
REFERENCE_FIRST_STAGE = {"target": "ldm.models.autoencoder.VQModelInterface", "params": dict(
    embed_dim=3, n_embed=8192, ddconfig=dict(double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3,
                                             ch=128, ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[]))}
