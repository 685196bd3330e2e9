"""Pictures to look at after training: reconstructions, one-step denoising, and samples.

``previews.png`` rows, for a few seeded crops:

1. the crop;
2. its autoencoder reconstruction (encode, quantise, decode);
3. the latent noised to ``t`` (decoded as it is);
4. the UNet's one-step estimate of the clean latent from row 3, decoded;
5. samples drawn from pure noise with deterministic DDIM (null condition).

All draws come from a generator seeded by the run's seed, so the picture is
the same for the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pathsegdiff.extract.pretrain.batches import make_batch, step_generator
from pathsegdiff.extract.pretrain.models import alphas_cumprod, pre_quant_latent

PREVIEW_T = 250
DDIM_STEPS = 50


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, h, w) in [-1, 1] -> (B, h, w, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def ddim_sample(unet, context: torch.Tensor, shape: tuple[int, ...], g: torch.Generator, steps: int = DDIM_STEPS):
    """Deterministic DDIM (eta 0) from pure noise; (B, c, h, w) scaled latents."""
    abar = alphas_cumprod().float()
    ts = torch.linspace(len(abar) - 1, 0, steps).round().long()
    z = torch.randn(shape, generator=g).to(context.device)
    for i, t in enumerate(ts):
        a = abar[t]
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        eps = unet(z, t.to(context.device).expand(shape[0]), encoder_hidden_states=context).sample.float()
        x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return z


@torch.no_grad()
def save_previews(vq, unet, projection, scale: float, bank, cfg, path: Path, n: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = next(unet.parameters()).device
    g = step_generator(cfg.seed, "scale", 10_000)
    batch = make_batch(bank, n, cfg.crop, cfg.augment, g)
    rgb = batch.rgb.to(device)
    z0 = pre_quant_latent(vq, rgb).float() * scale  # (n, 3, c/4, c/4)
    recon = vq.decode(z0 / scale).sample
    abar = alphas_cumprod().float().to(device)
    a = abar[PREVIEW_T]
    eps = torch.randn(z0.shape, generator=g).to(device)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
    context = projection(torch.zeros(n, projection.patch_fc.in_features, device=device))
    t = torch.full((n,), PREVIEW_T, device=device, dtype=torch.long)
    x0 = (zt - (1 - a).sqrt() * unet(zt, t, encoder_hidden_states=context).sample.float()) / a.sqrt()
    samples = ddim_sample(unet, context, tuple(z0.shape), g)
    rows = {"crop": rgb, "reconstruction": recon, f"noised, t={PREVIEW_T}": vq.decode(zt / scale).sample,
            "one-step denoised": vq.decode(x0 / scale).sample, f"DDIM sample ({DDIM_STEPS} steps)":
            vq.decode(samples / scale).sample}
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c, image in enumerate(_to_uint8(images)):
            axes[r, c].imshow(image)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def previews_for(model_dir: Path, bank, cfg, n: int = 6) -> Path:
    """``MODEL_DIR/previews.png`` from an exported model folder (e.g. a run trained before previews existed)."""
    from diffusers import UNet2DConditionModel, VQModel

    from pathsegdiff.extract.backbones.diffusers_unet import SSL_PROJECTION, load_ssl_projection

    root = Path(model_dir)
    vq = VQModel.from_pretrained(str(root / "vae"), local_files_only=True).eval()
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"), local_files_only=True).eval()
    projection, _ = load_ssl_projection(root / SSL_PROJECTION)
    return save_previews(vq, unet, projection.eval(), float(vq.config.scaling_factor), bank, cfg,
                         root / "previews.png", n)
