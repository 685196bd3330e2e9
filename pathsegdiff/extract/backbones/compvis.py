"""Load a CompVis/Lightning log directory (e.g. the BRCA-20x HIPT model) as an :class:`LDM`.

Layout: ``configs/*-project.yaml`` + ``checkpoints/last.ckpt`` whose
``state_dict`` holds ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VQ-f4 or KL autoencoder) and ``cond_stage_model.*``
(the SSL projections).  The UNet and first stage are renamed to diffusers
layout with diffusers' own converters and loaded strictly into models built
from configs derived here (``compvis_config``); nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel, VQModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from torch import nn

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.base import Family, config_sha256, state_dict_sha256
from pathsegdiff.extract.backbones.checkpoint_io import read_state_dict
from pathsegdiff.extract.backbones.compvis_config import (
    class_name,
    downsample_factor,
    first_stage_config,
    model_params,
    unet_config,
)
from pathsegdiff.extract.backbones.ldm import (
    LDM,
    SSLProjection,
    scaled_linear_alphas_cumprod,
)

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
COND_PREFIX = "cond_stage_model."


def find_files(root: Path) -> tuple[Path, Path]:
    """(yaml, checkpoint) of a log directory: the newest ``*-project.yaml``, ``last.ckpt`` first."""
    yamls = sorted((root / "configs").glob("*-project.yaml")) or sorted((root / "configs").glob("*.yaml"))
    if not yamls:
        raise ModelLoadError(f"{root / 'configs'}: no *-project.yaml config found")
    ckpt_dir = root / "checkpoints"
    candidates = [ckpt_dir / "last.ckpt"] + sorted(ckpt_dir.glob("*.ckpt")) + sorted(ckpt_dir.glob("*.safetensors"))
    ckpt = next((c for c in candidates if c.is_file()), None)
    if ckpt is None:
        raise ModelLoadError(f"{ckpt_dir / 'last.ckpt'}: checkpoint file not found (the README, "
                             "'The real workflow', step 1, says where to get the BRCA-20x model)")
    return yamls[-1], ckpt


def _load_strict(module: nn.Module, weights: dict[str, torch.Tensor], what: str, path: Path) -> None:
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches: keep the first few lines of torch's list
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
        raise ModelLoadError(f"{path}: the {what} weights do not match the config ({'; '.join(lines)})") from exc
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: the {what} weights do not match the config "
            f"(missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''})"
        )


def _build_unet(params: dict[str, Any], sd: dict[str, torch.Tensor], path: Path) -> UNet2DConditionModel:
    config = unet_config(params["unet_config"]["params"])
    if not any(k.startswith(UNET_PREFIX) for k in sd):
        raise ModelLoadError(f"{path}: no {UNET_PREFIX}* weights in the checkpoint")
    unet = UNet2DConditionModel(**config)
    try:
        weights = convert_ldm_unet_checkpoint(sd, config)
    except (KeyError, IndexError) as exc:
        raise ModelLoadError(f"{path}: UNet weights do not match the yaml's unet_config ({exc!r})") from exc
    _load_strict(unet, {k: v.float() for k, v in weights.items()}, "UNet", path)
    return unet


def _build_first_stage(params: dict[str, Any], sd: dict[str, torch.Tensor], path: Path) -> tuple[nn.Module, Any]:
    section = params["first_stage_config"]
    dd = section["params"]["ddconfig"]
    if dd.get("attn_resolutions"):
        raise ModelLoadError(f"{path}: first stages with attention in the down blocks are not supported")
    kind, config = first_stage_config(section)
    if kind == "kl" and int(dd["z_channels"]) != config["latent_channels"]:
        raise ModelLoadError(f"{path}: KL first stage with z_channels != embed_dim is not supported")
    model: nn.Module = AutoencoderKL(**config) if kind == "kl" else VQModel(**config)
    first = {k: v for k, v in sd.items() if k.startswith(FIRST_STAGE_PREFIX)}
    if not first:
        raise ModelLoadError(f"{path}: no {FIRST_STAGE_PREFIX}* weights in the checkpoint")
    weights = convert_ldm_vae_checkpoint(first, config)
    if kind == "vq":  # the converter knows SD's KL layout; the codebook is copied by hand
        weights["quantize.embedding.weight"] = first.get(FIRST_STAGE_PREFIX + "quantize.embedding.weight")
        weights = {k: v for k, v in weights.items() if v is not None}
    _load_strict(model, {k: v.float() for k, v in weights.items()}, "first stage", path)
    if kind == "vq":  # pre-quantisation output, as LatentDiffusion.encode_first_stage for VQModelInterface
        return model, lambda rgb: model.encode(rgb).latents
    return model, lambda rgb: model.encode(rgb).latent_dist.mode()  # the mean: deterministic


def _scale_factor(params: dict[str, Any], sd: dict[str, torch.Tensor]) -> float:
    """The latent scale: a ``scale_by_std`` model learned it and keeps it as a buffer in the checkpoint."""
    if params.get("scale_by_std") and "scale_factor" in sd:
        return float(sd["scale_factor"])
    return float(params.get("scale_factor", 1.0))


def _first_stage_notes(params: dict[str, Any]) -> tuple[str, ...]:
    if first_stage_config(params["first_stage_config"])[0] == "kl":
        return ("KL first stage: the latent is the posterior mean (the original samples from it), "
                "so features are deterministic",)
    return ()


def _build_cond(params: dict[str, Any], sd: dict[str, torch.Tensor], path: Path) -> SSLProjection:
    section = params["cond_stage_config"]
    p = section.get("params", {}) or {}
    key = COND_PREFIX + "patch_fc.weight"
    if key not in sd:
        raise ModelLoadError(f"{path}: no {key} in the checkpoint")
    context_dim, patch_dim = sd[key].shape
    region_dim = None
    if class_name(section) == "SSLEmbedder":
        region_dim = int(sd[COND_PREFIX + "region_fc.weight"].shape[1]) if COND_PREFIX + "region_fc.weight" in sd else -1
        if region_dim < 0:
            raise ModelLoadError(f"{path}: SSLEmbedder without {COND_PREFIX}region_fc.weight")
    cond = SSLProjection(int(patch_dim), int(context_dim), region_dim=region_dim, normalize=bool(p.get("normalize_ssl", False)))
    weights = {k[len(COND_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(COND_PREFIX)}
    _load_strict(cond, weights, "cond_stage_model", path)
    return cond


def load_compvis(root: Path) -> LDM:
    yaml_path, ckpt_path = find_files(root)
    try:
        config = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        detail = f"{getattr(exc, 'problem', None) or exc}" + (f" at line {where.line + 1}" if where else "")
        raise ModelLoadError(f"{yaml_path}: not valid YAML ({' '.join(detail.split())})") from exc
    params = model_params(config if isinstance(config, dict) else {}, yaml_path)
    sd = read_state_dict(ckpt_path)
    unet = _build_unet(params, sd, ckpt_path)
    first_stage, encode = _build_first_stage(params, sd, ckpt_path)
    cond = _build_cond(params, sd, ckpt_path)
    if cond.patch_fc.out_features != unet.config.cross_attention_dim:
        raise ModelLoadError(f"{ckpt_path}: cond_stage_model width differs from the UNet's context_dim")
    latent_channels = int(first_stage.config.get("vq_embed_dim") or first_stage.config.latent_channels)
    return LDM(
        model_id=f"compvis:{root.name}",
        weights_sha256=state_dict_sha256(unet, first_stage, cond),
        config_sha256=config_sha256(config["model"]),
        unet=unet,
        first_stage=encode,
        first_stage_module=first_stage,
        scale_factor=_scale_factor(params, sd),
        alphas_cumprod=scaled_linear_alphas_cumprod(
            float(params.get("linear_start", 1e-4)), float(params.get("linear_end", 2e-2)), int(params.get("timesteps", 1000))
        ),
        latent_channels=latent_channels,
        downsample=downsample_factor(params["first_stage_config"]),
        context_tokens=cond.tokens,
        context_dim=cond.patch_fc.out_features,
        ssl_dim=cond.patch_fc.in_features,
        cond=cond,
        notes=_first_stage_notes(params),
    )


FAMILY = Family("compvis", recognises=lambda path: (path / "configs").is_dir(), load=load_compvis,
                layout="configs/*-project.yaml + checkpoints/last.ckpt (a CompVis/Lightning log directory)")
