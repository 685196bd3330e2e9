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

A model folder holds ``transformer/`` (PixArtTransformer2DModel), ``vae/``
(AutoencoderKL) and ``scheduler/``, as ``save_pretrained`` writes them; it
is read with ``local_files_only``: nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PixArtTransformer2DModel
from diffusers.utils import is_accelerate_available
from torch import nn

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.base import Family, config_sha256, state_dict_sha256
from pathsegdiff.extract.backbones.dit_backbone import DiT
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




def _load(cls, folder: Path, config_name: str = "config.json"):
    try:
        if cls is DDPMScheduler:
            return cls.from_pretrained(str(folder), local_files_only=True)
        # diffusers' default, minus its warning on every load when accelerate is not installed
        return cls.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=is_accelerate_available())
    except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError variants
        raise ModelLoadError(f"{folder / config_name}: cannot load {cls.__name__} ({exc})") from exc


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
    """A diffusers folder with transformer/ (PixArtTransformer2DModel), vae/ (AutoencoderKL) and scheduler/."""
    configs = {"transformer": read_model_json(root / "transformer" / "config.json", LAYOUT),
               "vae": read_model_json(root / "vae" / "config.json", LAYOUT),
               "scheduler": read_model_json(root / "scheduler" / "scheduler_config.json", LAYOUT)}
    transformer = _own_memory(_load(PixArtTransformer2DModel, root / "transformer"))
    vae = _own_memory(_load(AutoencoderKL, root / "vae"))
    # DDPMScheduler computes the training betas from any scheduler's config (PixArt ships DPM-Solver's)
    scheduler = _load(DDPMScheduler, root / "scheduler", "scheduler_config.json")
    return DiT(
        model_id=f"dit:{root.name}",
        weights_sha256=state_dict_sha256(transformer, vae),
        config_sha256=config_sha256(configs),
        transformer=transformer,
        vae=vae,
        alphas_cumprod=scheduler.alphas_cumprod.clone(),
        notes=(MEAN_NOTE, NULL_NOTE),
    )


FAMILY = Family(
    "dit",
    builtin={"tiny-dit": build_tiny_dit},
    recognises=lambda path: (path / "transformer" / "config.json").is_file(),
    load=load_dit_folder,
    layout="transformer/ (PixArtTransformer2DModel), vae/ (AutoencoderKL), scheduler/ (a diffusers DiT folder, "
           "e.g. PixCell)",
)
