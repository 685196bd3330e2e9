"""The diffusion-transformer family: the seeded ``tiny-dit`` and local diffusers DiT folders.

Both give a :class:`~pathsegdiff.extract.backbones.dit_backbone.DiT` (blocks
``block0`` .. ``block{N-1}``, see ``dit_backbone.py``).

``tiny-dit`` is shaped like PixCell-256 (an f8 KL autoencoder, a PixArt
transformer with patch size 2 and sample size 32, i.e. a 256 px tile,
conditioned on a per-tile embedding as one caption token), but much
smaller: 4 blocks of 2 heads x 16 dims, a 4-channel latent, and ssl_dim 384
so the HIPT, null and precomputed conditioners fit it.  A 256 px tile at
two timesteps takes about 0.05 s on one CPU core, most of it the VAE
encoder (0.01 s for 64 px).  Its weights are NOT trained: they are
drawn from a fixed seed with our own generator, so they, and
``weights_sha256``, do not change with the torch or diffusers version.

A model folder holds ``transformer/``, ``vae/`` (AutoencoderKL) and
``scheduler/``, as ``save_pretrained`` writes them; it is read with
``local_files_only``: nothing is fetched.  ``transformer/config.json``
says which transformer (:func:`transformer_kind`):

- ``PixArtTransformer2DModel`` (or the older ``Transformer2DModel`` with
  ``norm_type: ada_norm_single``): PixArt-alpha/Sigma, the caption token;
- ``PixCellTransformer2DModel`` with ``caption_num_tokens: 1`` (PixCell-256):
  PixArt's forward exactly, for one UNI-2h token, so it loads as PixArt; its
  learnt unconditional embedding is not used (``--conditioning null`` feeds
  zeros), so condition it with ``--conditioning precomputed:`` on the tiles'
  UNI-2h embeddings.  PixCell-1024 (16 tokens with a position embedding of
  their own) is refused;
- ``DiTTransformer2DModel`` (or ``Transformer2DModel`` with ``norm_type:
  ada_norm_zero``): a class-conditional DiT, run under its null class;
- anything else is refused in one line naming these.

Every tensor of the model must be in the folder's weights (diffusers would
fill a missing one with random values and only warn).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel, PixArtTransformer2DModel
from diffusers.utils import is_accelerate_available
from torch import nn

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.base import Family, config_sha256, state_dict_sha256
from pathsegdiff.extract.backbones.dit_backbone import ClassConditionalDiT, DiT
from pathsegdiff.extract.backbones.model_files import read_model_json
from pathsegdiff.extract.backbones.seeding import seed_module

TINY_DIT_MODEL_ID = "tiny-dit-v1"  # bump when the config or the weight recipe changes
TINY_DIT_SEED = 20240602
SSL_DIM = 384
# the tiny UNet's (the reference's) schedule; a DDPMScheduler, so a saved folder loads the same float32 values
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0195}
MEAN_NOTE = "latent = VAE posterior mean (not a sample), so a tile always gets the same latent"
NULL_NOTE = "--conditioning null feeds a zero embedding as the caption token"

TRANSFORMER_CONFIG = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 4,
    "out_channels": 8,  # noise and variance, as PixArt
    "num_layers": 4,
    "cross_attention_dim": 32,  # = heads x head dim, as PixArt
    "sample_size": 32,  # latent of a 256 px tile
    "patch_size": 2,
    "caption_channels": SSL_DIM,
    "use_additional_conditions": False,
}

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 16, 32, 32),  # 3 downsamplers: f8, as SD's and SD3's VAEs
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "mid_block_add_attention": False,  # a self-attention over the latent would dominate the tiny model's cost
    # (mean - shift) * scale has mean ~0, std ~1 on H&E tiles (measured: mean 0.10, std 0.49), the way
    # SD3's VAE factors were chosen
    "shift_factor": 0.1,
    "scaling_factor": 2.0,
}

LAYOUT = "DiT folder needs transformer/, vae/ and scheduler/"


def build_tiny_dit() -> DiT:
    """The seeded tiny DiT on the CPU in float32."""
    transformer = PixArtTransformer2DModel(**TRANSFORMER_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    for prefix, module in (("transformer", transformer), ("vae", vae)):
        seed_module(TINY_DIT_SEED, prefix, module)
    return DiT(
        model_id=TINY_DIT_MODEL_ID,
        weights_sha256=state_dict_sha256(transformer, vae),
        config_sha256=config_sha256({"transformer": TRANSFORMER_CONFIG, "vae": VAE_CONFIG,
                                     "scheduler": SCHEDULER_CONFIG, "seed": TINY_DIT_SEED}),
        transformer=transformer,
        vae=vae,
        alphas_cumprod=DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.clone(),
        untrained=True,
        notes=(MEAN_NOTE, NULL_NOTE),  # untrained=True: extract warns of the seeded weights
    )




SUPPORTED = ("PixArtTransformer2DModel (PixArt-alpha/Sigma), PixCellTransformer2DModel with one token (PixCell-256) "
             "or DiTTransformer2DModel (class-conditional, e.g. facebook/DiT-XL-2-256)")
PIXCELL_UNUSED = {"caption_projection.uncond_embedding"}  # PixCell's learnt null condition, for guidance
PIXCELL_NOTE = ("PixCell-256 loaded as PixArt (the same forward for one token); its learnt unconditional "
                "embedding is not used: --conditioning null feeds zeros, --conditioning precomputed: the tiles' "
                "UNI-2h embeddings is what it was trained on")
CLASS_NOTE = "class-conditional DiT: features under its null class (its unconditional label)"


def transformer_kind(config: dict, path: Path) -> str:
    """``pixart``, ``pixcell`` or ``class`` from ``transformer/config.json``; anything else refused in one line."""
    name, norm = config.get("_class_name"), config.get("norm_type")
    if name == "PixCellTransformer2DModel":
        tokens = config.get("caption_num_tokens", 1)
        if tokens != 1:
            raise ModelLoadError(f"{path}: PixCell with {tokens} UNI-2h tokens per image (PixCell-1024) is not "
                                 "supported: its condition tokens carry a position embedding of their own; "
                                 "PixCell-256 (one token) is")
        return "pixcell"
    if name in ("PixArtTransformer2DModel", "DiTTransformer2DModel", "Transformer2DModel"):
        default = "ada_norm_zero" if name == "DiTTransformer2DModel" else "ada_norm_single"
        kind = {"ada_norm_single": "pixart", "ada_norm_zero": "class"}.get(norm or default)
        if kind == "pixart" and config.get("caption_channels") is None:
            raise ModelLoadError(f"{path}: caption_channels is null, so the transformer has no caption projection; "
                                 "a DiT here is conditioned on a per-tile embedding, as PixCell is on UNI")
        if kind:
            return kind
    raise ModelLoadError(f"{path}: transformer {name!r} with norm_type {norm!r} is not a supported DiT; "
                         f"supported: {SUPPORTED}")


def _load(cls, folder: Path, config_name: str = "config.json", unused: set[str] = frozenset()):
    """``cls`` from ``folder``; every tensor of the model must be in its weights (``unused`` extra ones allowed)."""
    try:
        if cls is DDPMScheduler:
            return cls.from_pretrained(str(folder), local_files_only=True)
        # diffusers' default, minus its warning on every load when accelerate is not installed
        model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                          low_cpu_mem_usage=is_accelerate_available())
    except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError variants
        raise ModelLoadError(f"{folder / config_name}: cannot load {cls.__name__} ({exc})") from exc
    missing = sorted(info.get("missing_keys") or ())
    extra = sorted(set(info.get("unexpected_keys") or ()) - set(unused))
    if missing or extra:
        what = f"{len(missing)} tensor(s) of the model missing (e.g. {missing[:3]})" if missing else \
            f"{len(extra)} tensor(s) the model does not have (e.g. {extra[:3]})"
        raise ModelLoadError(f"{folder}: {what}; the weights do not match {config_name}")
    return model


def _own_memory(module: nn.Module) -> nn.Module:
    """Copy every tensor into memory torch allocated.

    diffusers leaves the weights in the safetensors file's buffer, at the file's byte offsets; on the CPU
    the GEMM takes another path for weights not 64-byte aligned, so the same weights gave features
    differing in their last bits from the built-in model's (and the buffer stays tied to the file).
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()
    return module


def load_dit_folder(root: Path) -> DiT:
    """A diffusers folder with transformer/ (see :func:`transformer_kind`), vae/ (AutoencoderKL) and scheduler/."""
    transformer_config = read_model_json(root / "transformer" / "config.json", LAYOUT)
    kind = transformer_kind(transformer_config, root / "transformer" / "config.json")
    vae_layout = LAYOUT + " (PixCell uses Stable Diffusion 3's VAE: copy its vae/ in)" if kind == "pixcell" else LAYOUT
    configs = {"transformer": transformer_config, "vae": read_model_json(root / "vae" / "config.json", vae_layout),
               "scheduler": read_model_json(root / "scheduler" / "scheduler_config.json", LAYOUT)}
    cls = DiTTransformer2DModel if kind == "class" else PixArtTransformer2DModel
    transformer = _own_memory(_load(cls, root / "transformer", unused=PIXCELL_UNUSED if kind == "pixcell" else set()))
    vae = _own_memory(_load(AutoencoderKL, root / "vae"))
    # DDPMScheduler computes the training betas from any scheduler's config (PixArt ships DPM-Solver's)
    scheduler = _load(DDPMScheduler, root / "scheduler", "scheduler_config.json")
    notes = (MEAN_NOTE, CLASS_NOTE) if kind == "class" else (MEAN_NOTE, NULL_NOTE)
    return (ClassConditionalDiT if kind == "class" else DiT)(
        model_id=f"dit:{root.name}",
        weights_sha256=state_dict_sha256(transformer, vae),
        config_sha256=config_sha256(configs),
        transformer=transformer,
        vae=vae,
        alphas_cumprod=scheduler.alphas_cumprod.clone(),
        notes=notes + ((PIXCELL_NOTE,) if kind == "pixcell" else ()),
    )


FAMILY = Family(
    "dit",
    builtin={"tiny-dit": build_tiny_dit},
    recognises=lambda path: (path / "transformer" / "config.json").is_file(),
    load=load_dit_folder,
    layout="transformer/ (PixArt, PixCell-256 or class-conditional DiT), vae/ (AutoencoderKL), scheduler/ "
           "(a diffusers DiT folder)",
)
