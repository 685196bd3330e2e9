"""The trained model as a folder ``extract --model DIR`` loads (the diffusers-UNet family).

Layout (why: a diffusers folder is what the ``diffusers-unet`` family and
diffusers itself already read; the SSL projection is the one piece diffusers
has no class for, so it sits beside them in ``ssl_projection/``)::

    DIR/unet/        UNet2DConditionModel (config.json + safetensors), EMA weights
    DIR/vae/         VQModel, EMA weights; ``scaling_factor`` = 1 / std of its latents
    DIR/scheduler/   DDPMScheduler: scaled_linear 0.0015..0.0195, 1000 steps, epsilon
    DIR/ssl_projection/  SSLProjection config + safetensors, and the conditioning it saw
    DIR/model_card.md, model_card.json, loss.png   (card.py)
    DIR/training/    checkpoints for resuming (not needed to load the model)
"""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

from pathsegdiff.extract.backbones.diffusers_unet import save_ssl_projection
from pathsegdiff.extract.backbones.ldm import SSLProjection
from pathsegdiff.extract.backbones.tiny import BETA_END, BETA_START
from pathsegdiff.extract.pretrain.models import TIMESTEPS


def with_scaling_factor(vq: VQModel, scale: float) -> VQModel:
    """A copy of ``vq`` whose config records the latent scale (``LDM.encode`` multiplies by it)."""
    out = VQModel.from_config({**dict(vq.config), "scaling_factor": float(scale)})
    out.load_state_dict(vq.state_dict())
    return out.eval().requires_grad_(False)


def export_autoencoder(vq: VQModel, scale: float, root: Path) -> None:
    with_scaling_factor(vq, scale).save_pretrained(str(root / "vae"), safe_serialization=True)


def export_denoiser(unet: UNet2DConditionModel, projection: SSLProjection, conditioning: str, root: Path) -> None:
    unet.save_pretrained(str(root / "unet"), safe_serialization=True)
    save_ssl_projection(projection, root, conditioning)
    DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="scaled_linear", beta_start=BETA_START,
                  beta_end=BETA_END, prediction_type="epsilon", clip_sample=False).save_pretrained(str(root / "scheduler"))
