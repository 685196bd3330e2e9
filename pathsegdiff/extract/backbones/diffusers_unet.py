"""Load a diffusers model folder (e.g. Stable Diffusion 1.x/2.x) as an :class:`LDM`.

Layout: ``unet/``, ``vae/`` (AutoencoderKL or VQModel), ``scheduler/`` and,
optionally, ``text_encoder/`` + ``tokenizer/``.  The conditioning is fixed:
the empty-prompt embedding when a text encoder, a tokenizer and
``transformers`` are there (what SD pipelines use as the unconditional
input), otherwise zeros of the same shape, and ``LDM.notes`` says so.

A folder made by ``pathsegdiff pretrain`` also holds ``ssl_projection/``
(``config.json`` + ``model.safetensors``: the reference-style
:class:`SSLProjection`, and the conditioning it was trained with).  Then the
model is conditioned like the CompVis family: ``--conditioning null``,
``hipt:`` or ``precomputed:`` feed the projection (null: a zero embedding,
in-distribution because training zeroed embeddings with p=0.1).
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
from pathsegdiff.extract.backbones.ldm import LDM, SSLProjection
from pathsegdiff.extract.backbones.model_files import read_model_json

DEFAULT_TOKENS = 77  # CLIP's context length, for zero contexts without a tokenizer

LAYOUT = "diffusers folder needs unet/, vae/ and scheduler/"
SSL_PROJECTION = "ssl_projection"  # optional sub-folder: the per-tile conditioning projection
SSL_CONFIG, SSL_WEIGHTS = "config.json", "model.safetensors"


def save_ssl_projection(projection: SSLProjection, root: Path, conditioning: str) -> Path:
    """Write ``root/ssl_projection/`` (config + safetensors) so :func:`load_diffusers_folder` conditions on it."""
    import json

    from safetensors.torch import save_file

    folder = root / SSL_PROJECTION
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "SSLProjection", "patch_dim": projection.patch_fc.in_features,
              "context_dim": projection.patch_fc.out_features,
              "region_dim": projection.region_fc.in_features if projection.region_fc is not None else None,
              "normalize": projection.normalize, "trained_with_conditioning": conditioning}
    save_file({k: v.detach().contiguous().cpu() for k, v in projection.state_dict().items()}, str(folder / SSL_WEIGHTS))
    (folder / SSL_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_ssl_projection(folder: Path) -> tuple[SSLProjection, dict]:
    """The projection saved by :func:`save_ssl_projection` and its config."""
    from safetensors.torch import load_file

    config = read_model_json(folder / SSL_CONFIG, "ssl_projection/ folder needs config.json and model.safetensors")
    try:
        projection = SSLProjection(int(config["patch_dim"]), int(config["context_dim"]),
                                   region_dim=int(config["region_dim"]) if config.get("region_dim") else None,
                                   normalize=bool(config.get("normalize", True)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{folder / SSL_CONFIG}: needs patch_dim, context_dim, region_dim, normalize ({exc!r})") from exc
    weights_path = folder / SSL_WEIGHTS
    if not weights_path.is_file():
        raise ModelLoadError(f"{weights_path}: not found (ssl_projection/ needs config.json and model.safetensors)")
    try:
        weights = load_file(str(weights_path))
        projection.load_state_dict({k: v.float() for k, v in weights.items()})
    except Exception as exc:  # safetensors' own errors, or a strict-load RuntimeError
        raise ModelLoadError(f"{weights_path}: the weights do not match {SSL_CONFIG} ({exc})") from exc
    return projection, config



def _load(cls, folder: Path):
    try:
        # low_cpu_mem_usage=False: the default asks for `accelerate` and prints a warning when it is missing
        return cls.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
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


def load_diffusers_folder(root: Path, model_id: str | None = None) -> LDM:
    """The folder's LDM; ``model_id``: the id a built-in model ships under (default ``diffusers:<folder name>``)."""
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
    if (root / SSL_PROJECTION).is_dir():
        cond, ssl_config = load_ssl_projection(root / SSL_PROJECTION)
        if cond.patch_fc.out_features != context_dim:
            raise ModelLoadError(f"{root / SSL_PROJECTION}: context_dim {cond.patch_fc.out_features} != the UNet's "
                                 f"cross_attention_dim {context_dim}")
        conditioning = dict(cond=cond, context_tokens=cond.tokens, ssl_dim=cond.patch_fc.in_features)
        notes = (f"conditioned through ssl_projection/ (trained with --conditioning "
                 f"{ssl_config.get('trained_with_conditioning', 'unknown')})",)
        holder: nn.Module = cond
    else:
        context, note = _empty_prompt(root, context_dim)
        holder = nn.Module()
        holder.register_buffer("null_context", context)
        conditioning = dict(null_context=context, context_tokens=int(context.shape[1]), ssl_dim=0)
        notes, ssl_config = (note,), None
    return LDM(
        model_id=model_id or f"diffusers:{root.name}",
        weights_sha256=state_dict_sha256(unet, vae, holder),
        config_sha256=config_sha256({"unet": unet_config, "vae": vae_config, "scheduler": scheduler_config,
                                     **({"ssl_projection": ssl_config} if ssl_config else {})}),
        unet=unet,
        first_stage=first_stage,
        first_stage_module=vae,
        scale_factor=float(vae.config.get("scaling_factor", 1.0)),
        alphas_cumprod=scheduler.alphas_cumprod.clone(),
        latent_channels=int(vae.config.get("vq_embed_dim") or vae.config.latent_channels),
        downsample=2 ** (len(vae.config.block_out_channels) - 1),
        context_dim=context_dim,
        notes=notes,
        **conditioning,
    )


FAMILY = Family("diffusers-unet", recognises=lambda path: (path / "unet" / "config.json").is_file(),
                load=load_diffusers_folder, layout="unet/, vae/, scheduler/ (a diffusers UNet folder, e.g. Stable Diffusion; "
                       "optionally ssl_projection/ from pathsegdiff pretrain)")
