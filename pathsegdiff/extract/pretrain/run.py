"""``pretrain``: the two stages in order, each resumable, then the model folder and its card.

1. Autoencoder (``VQModel``) on augmented crops; its EMA weights are frozen
   and exported to ``vae/``, with the latent scale (1 / std of the
   pre-quantisation latents on fixed batches) as its ``scaling_factor``.
2. UNet + SSL projection on the scaled latents of fresh crops (eps-prediction,
   the reference schedule, condition dropout); EMA weights exported to
   ``unet/`` and ``ssl_projection/`` with the ``scheduler/``.

Rerunning with the same settings and output directory resumes where the last
checkpoint left off; a finished stage is not retrained (more ``steps``
extend it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pathsegdiff.extract.pretrain.batches import make_batch, step_generator
from pathsegdiff.extract.pretrain.card import write_card
from pathsegdiff.extract.pretrain.conditioner import embedding_width, training_conditioner
from pathsegdiff.extract.pretrain.config import PretrainConfig, resume_key
from pathsegdiff.extract.pretrain.export import export_autoencoder, export_denoiser
from pathsegdiff.extract.pretrain.loop import StageResult, run_stage
from pathsegdiff.extract.pretrain.models import (
    alphas_cumprod,
    autoencoder_loss,
    build_autoencoder,
    build_denoiser,
    diffusion_loss,
    pre_quant_latent,
)
from pathsegdiff.extract.pretrain.previews import save_previews
from pathsegdiff.extract.pretrain.tiles import TileBank, load_tiles, open_inputs
from pathsegdiff.output_dir import OutputKind, check_output_dir, replace_output_dir
from pathsegdiff.tiles.datasets import SourceConfig

TRAINING = "training"
PRETRAIN_OUTPUT = OutputKind(  # what pretrain (and the he-tiny recipe: train.log, exclusion.json) writes
    "pretrain", names=frozenset({"unet", "vae", "scheduler", "ssl_projection", TRAINING, "model_card.md",
                                 "model_card.json", "loss.png", "previews.png", "train.log", "exclusion.json"}),
    required=frozenset({TRAINING}))
SCALE_BATCHES = 8


@dataclass(frozen=True)
class PretrainResult:
    """Where the model is, how far each stage got, and whether both finished."""

    out_dir: Path
    steps: dict[str, int]
    final_loss: dict[str, float]
    wall_s: dict[str, float]
    scale_factor: float | None
    finished: bool

    def line(self) -> str:
        stages = ", ".join(f"{name} {self.steps.get(name, 0)} steps (loss {self.final_loss.get(name, float('nan')):.4f}, "
                           f"{self.wall_s.get(name, 0.0):.0f} s)" for name in self.steps)
        state = "" if self.finished else " (not finished: rerun the same command to resume)"
        return f"{stages} -> {self.out_dir}{state}"


def _prepare(out: Path, overwrite: bool) -> None:
    """A new or empty folder, or (to resume) this command's own earlier output; ``overwrite`` starts afresh."""
    if overwrite or not out.exists() or not any(out.iterdir()):
        replace_output_dir(out, PRETRAIN_OUTPUT, overwrite)
    elif not PRETRAIN_OUTPUT.owns(out):
        check_output_dir(out, PRETRAIN_OUTPUT, overwrite)  # raises, naming the foreign files
    (out / TRAINING).mkdir(parents=True, exist_ok=True)


@torch.no_grad()
def latent_scale(vq, bank: TileBank, cfg: PretrainConfig, device: torch.device) -> float:
    """1 / std of the pre-quantisation latents of fixed, seeded batches (as CompVis ``scale_by_std``)."""
    zs = [pre_quant_latent(vq, make_batch(bank, cfg.autoencoder.batch_size, cfg.crop, cfg.augment,
                                          step_generator(cfg.seed, "scale", i)).rgb.to(device)).float()
          for i in range(SCALE_BATCHES)]
    return float(1.0 / torch.cat(zs).std().clamp_min(1e-6))


def _train_autoencoder(cfg, bank, out, device, progress, stop_after, budget_s, echo) -> StageResult:
    vq = build_autoencoder(cfg).to(device)

    def loss_at(step: int, micro: int):
        batch = make_batch(bank, cfg.autoencoder.batch_size, cfg.crop, cfg.augment,
                           step_generator(cfg.seed, "autoencoder", step, micro))
        return autoencoder_loss(vq, batch.rgb.to(device), cfg.commitment)  # crops (B, 3, c, c) in [-1, 1]

    return run_stage("autoencoder", {"vq": vq}, loss_at, cfg.autoencoder, out / TRAINING / "autoencoder.pt",
                     resume_key(cfg, "autoencoder"), device, progress=progress, stop_after=stop_after,
                     budget_s=budget_s, echo=echo)


def _train_denoiser(cfg, bank, out, vq, scale, device, progress, stop_after, budget_s, echo) -> StageResult:
    unet, projection = build_denoiser(replace(cfg, ssl_dim=embedding_width(cfg.conditioning, cfg.ssl_dim)))
    unet, projection = unet.to(device), projection.to(device)
    conditioner = training_conditioner(cfg.conditioning, projection.patch_fc.in_features, device=str(device))
    abar = alphas_cumprod().to(device)
    b = cfg.unet.batch_size

    def loss_at(step: int, micro: int):
        g = step_generator(cfg.seed, "unet", step, micro)
        batch = make_batch(bank, b, cfg.crop, cfg.augment, g)
        with torch.no_grad():
            z0 = pre_quant_latent(vq, batch.rgb.to(device)).float() * scale  # (B, 3, c/4, c/4)
            ssl = conditioner.embed(batch.uint8.to(device), batch.tile_ids).float()  # (B, D)
        t = torch.randint(len(abar), (b,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        keep = (torch.rand(b, generator=g) >= cfg.cond_dropout).float()
        loss = diffusion_loss(unet, projection, z0, ssl, t.to(device), noise.to(device), keep.to(device), abar)
        return loss, {}

    key = {**resume_key(cfg, "unet"), "scale_factor": scale}
    return run_stage("unet", {"unet": unet, "projection": projection}, loss_at, cfg.unet,
                     out / TRAINING / "unet.pt", key, device, progress=progress, stop_after=stop_after,
                     budget_s=budget_s, echo=echo)


def pretrain(config: PretrainConfig, tiles: TileBank, out_dir: str | Path, *, overwrite: bool = False,
             command: str | None = None, progress: bool = True, stop_after: int | None = None,
             budget_minutes: dict[str, float] | None = None, echo: Callable[[str], None] = print) -> PretrainResult:
    """Train both stages on ``tiles`` into ``out_dir`` (resuming what is there) and write the model folder.

    ``stop_after``: return after that many optimizer steps of the current stage in this call (checkpointed,
    as if killed); rerun to go on.  ``budget_minutes``: per stage ({"autoencoder": 20, "unet": 60}), the
    training time after which the stage ends early (recorded; a rerun does not extend it).  ``command`` goes
    into the model card (default: ``sys.argv``).
    """
    out = Path(out_dir)
    _prepare(out, overwrite)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    t0 = time.perf_counter()
    stages: dict[str, StageResult] = {}
    scale = None
    budget = {k: 60.0 * v for k, v in (budget_minutes or {}).items()}
    stages["autoencoder"] = ae = _train_autoencoder(config, tiles, out, device, progress, stop_after,
                                                    budget.get("autoencoder"), echo)
    if ae.finished:
        vq = ae.ema["vq"].to(device)
        scale = latent_scale(vq, tiles, config, device)
        export_autoencoder(vq, scale, out)
        stages["unet"] = dn = _train_denoiser(config, tiles, out, vq, scale, device, progress, stop_after,
                                              budget.get("unet"), echo)
        if dn.state.step > 0:
            export_denoiser(dn.ema["unet"], dn.ema["projection"], config.conditioning, out)
        if dn.finished:
            save_previews(vq, dn.ema["unet"], dn.ema["projection"], scale, tiles, config, out / "previews.png")
    finished = all(s.finished for s in stages.values()) and len(stages) == 2
    result = PretrainResult(
        out_dir=out, steps={n: s.state.step for n, s in stages.items()},
        final_loss={n: _tail_mean(s.state.losses) for n, s in stages.items() if s.state.losses},
        wall_s={n: s.state.wall_s for n, s in stages.items()}, scale_factor=scale, finished=finished)
    write_card(out, config, tiles, stages, result, command or " ".join(sys.argv), time.perf_counter() - t0)
    return result


def _tail_mean(values: Sequence[float], n: int = 50) -> float:
    tail = list(values)[-n:]
    return float(sum(tail) / len(tail))


def pretrain_paths(paths: Sequence[str | Path], out_dir: str | Path, config: PretrainConfig = PretrainConfig(),
                   source: SourceConfig | Sequence[SourceConfig] = SourceConfig(), **kwargs) -> PretrainResult:
    """``pathsegdiff pretrain SOURCE... -o MODEL_DIR``: read every SOURCE (tiles, slides, cohorts, stores), train.

    ``source``: how to tile each SOURCE; several configs (e.g. ``--mpp 0.5 --mpp 1.0``) tile each one per config.
    ``kwargs`` go to :func:`pretrain` (overwrite, budget_minutes, progress, stop_after, command, echo).
    """
    bank = load_tiles(open_inputs(paths, source), progress=kwargs.get("progress", True))
    return pretrain(config, bank, out_dir, **kwargs)
