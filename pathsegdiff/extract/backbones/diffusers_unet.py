"""Load a diffusers model folder (e.g. Stable Diffusion 1.x/2.x) as an :class:`LDM`.

Layout: ``unet/``, ``vae/`` (AutoencoderKL or VQModel), ``scheduler/`` and,
optionally, ``text_encoder/`` + ``tokenizer/``.  The conditioning is fixed:
the empty-prompt embedding when a text encoder, a tokenizer and
``transformers`` are there (what SD pipelines use as the unconditional
input), otherwise zeros of the same shape, and ``LDM.notes`` says so.
The latent is the VAE posterior mean (deterministic), shifted and scaled by
the VAE config's ``shift_factor`` / ``scaling_factor``.  Everything is read
with ``local_files_only``: nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, VQModel
from torch import nn

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.base import Family, config_sha256, state_dict_sha256
from pathsegdiff.extract.backbones.ldm import LDM
from pathsegdiff.extract.backbones.model_files import read_model_json

DEFAULT_TOKENS = 77  # CLIP's context length, for zero contexts without a tokenizer

LAYOUT = "diffusers folder needs unet/, vae/ and scheduler/"




def _load(cls, folder: Path):
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError variants
        raise ModelLoadError(f"{folder}: cannot load {cls.__name__} ({exc})") from exc


def _empty_prompt(root: Path, context_dim: int) -> tuple[torch.Tensor, str]:
    """(1, tokens, dim) context and a note on how it was made."""
    if not ((root / "text_encoder").is_dir() and (root / "tokenizer").is_dir()):
        return torch.zeros(1, DEFAULT_TOKENS, context_dim), "no text encoder in the folder: null context is zeros"
    try:
        from transformers import AutoTokenizer, CLIPTextModel
    except ImportError:
        return torch.zeros(1, DEFAULT_TOKENS, context_dim), "transformers not installed: null context is zeros"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(str(root / "text_encoder"), local_files_only=True).eval()
    except Exception as exc:
        raise ModelLoadError(f"{root}: cannot load text_encoder/tokenizer ({exc})") from exc
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        context = encoder(ids)[0].float()
    if context.shape[-1] != context_dim:
        raise ModelLoadError(f"{root}: text encoder width {context.shape[-1]} != UNet cross_attention_dim {context_dim}")
    return context, "null context is the empty-prompt text embedding"


def load_diffusers_folder(root: Path) -> LDM:
    unet_config = read_model_json(root / "unet" / "config.json", LAYOUT)
    vae_config = read_model_json(root / "vae" / "config.json", LAYOUT)
    scheduler_config = read_model_json(root / "scheduler" / "scheduler_config.json", LAYOUT)
    if unet_config.get("addition_embed_type") or unet_config.get("class_embed_type"):
        raise ModelLoadError(f"{root / 'unet'}: UNets with added embeddings (e.g. SDXL) are not supported")
    unet = _load(UNet2DConditionModel, root / "unet")
    vae_cls = VQModel if vae_config.get("_class_name") == "VQModel" else AutoencoderKL
    vae = _load(vae_cls, root / "vae")
    shift = float(vae.config.get("shift_factor") or 0.0)
    if vae_cls is VQModel:
        first_stage = lambda rgb: vae.encode(rgb).latents - shift  # noqa: E731
    else:
        first_stage = lambda rgb: vae.encode(rgb).latent_dist.mode() - shift  # noqa: E731
    scheduler = _load(DDPMScheduler, root / "scheduler")
    context_dim = int(unet.config.cross_attention_dim)
    context, note = _empty_prompt(root, context_dim)
    holder = nn.Module()
    holder.register_buffer("null_context", context)
    return LDM(
        model_id=f"diffusers:{root.name}",
        weights_sha256=state_dict_sha256(unet, vae, holder),
        config_sha256=config_sha256({"unet": unet_config, "vae": vae_config, "scheduler": scheduler_config}),
        unet=unet,
        first_stage=first_stage,
        first_stage_module=vae,
        scale_factor=float(vae.config.get("scaling_factor", 1.0)),
        alphas_cumprod=scheduler.alphas_cumprod.clone(),
        latent_channels=int(vae.config.get("vq_embed_dim") or vae.config.latent_channels),
        downsample=2 ** (len(vae.config.block_out_channels) - 1),
        context_tokens=int(context.shape[1]),
        context_dim=context_dim,
        ssl_dim=0,
        null_context=context,
        notes=(note,),
    )


FAMILY = Family("diffusers-unet", recognises=lambda path: (path / "unet" / "config.json").is_file(),
                load=load_diffusers_folder, layout="unet/, vae/, scheduler/ (a diffusers UNet folder, e.g. Stable Diffusion)")
