"""One training loop for both stages: AdamW, gradient accumulation, EMA, checkpoints, exact resume.

A stage is its modules plus ``loss_at(step, micro)``, which builds its own
micro-batch from (seed, step, micro) and returns the loss and a few named
parts.  The loop does the rest: learning-rate warm-up, accumulation, clipping,
the EMA update, a tqdm bar with the loss, and a checkpoint every
``checkpoint_every`` steps and at the end.  A ``budget_s`` of training time
(summed over calls) closes the stage early: it then counts as finished at the
step it reached, recorded in the checkpoint, so a rerun goes on to the next
stage (the learning rate is constant after warm-up, so this equals a run
planned with that many steps).  On a CUDA device the forward runs
under bf16 autocast; on the CPU in float32 (the path the exact-resume test
checks).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pathsegdiff.extract.pretrain.checkpoint import StageState, load_checkpoint, save_checkpoint
from pathsegdiff.extract.pretrain.config import StageConfig
from pathsegdiff.extract.pretrain.ema import EMA

LossFn = Callable[[int, int], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class StageResult:
    """A stage's state when the call returned, and its EMA modules (the weights to export)."""

    name: str
    state: StageState
    ema: dict[str, nn.Module]
    finished: bool


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU (float32 there: exact and reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(modules: dict[str, nn.Module], cfg: StageConfig) -> torch.optim.AdamW:
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))


def _bar(name: str, state: StageState, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=state.step, desc=name, unit="step", disable=not enabled, dynamic_ncols=True)


def run_stage(name: str, modules: dict[str, nn.Module], loss_at: LossFn, cfg: StageConfig, checkpoint: Path,
              key: dict, device: torch.device, *, progress: bool = True, stop_after: int | None = None,
              budget_s: float | None = None, echo: Callable[[str], None] = print) -> StageResult:
    """Train ``modules`` for ``cfg.steps`` optimizer steps in all, resuming from ``checkpoint`` when it exists.

    ``stop_after``: return (checkpointed) after that many steps in this call, as a kill would, but cleanly.
    ``budget_s``: close the stage once its training time (all calls) reaches this many seconds.
    """
    for m in modules.values():
        m.train().requires_grad_(True)
    optimizer = _optimizer(modules, cfg)
    ema = EMA(modules, cfg.ema_decay)
    state = StageState()
    if checkpoint.is_file():
        state = load_checkpoint(checkpoint, key=key, modules=modules, ema=ema, optimizer=optimizer)
        echo(f"{name}: resuming at step {state.step} of {cfg.steps} ({checkpoint})")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    done_here = 0
    with _bar(name, state, cfg.steps, progress) as bar:
        while state.step < cfg.steps and not state.closed_early and (stop_after is None or done_here < stop_after):
            if budget_s is not None and state.wall_s >= budget_s:
                state.closed_early = True
                echo(f"{name}: time budget of {budget_s / 60:.0f} min reached at step {state.step} of {cfg.steps}; "
                     "the stage ends here")
                save_checkpoint(checkpoint, key=key, state=state, modules=modules, ema=ema, optimizer=optimizer)
                break
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * min(1.0, (state.step + 1) / max(1, cfg.warmup))
            optimizer.zero_grad(set_to_none=True)
            total, parts = 0.0, {}
            for micro in range(cfg.grad_accum):
                with autocast(device):
                    loss, got = loss_at(state.step, micro)
                (loss / cfg.grad_accum).backward()
                total += float(loss.detach()) / cfg.grad_accum
                for k, v in got.items():
                    parts[k] = parts.get(k, 0.0) + v / cfg.grad_accum
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            ema.update(modules, state.step)
            state.step += 1
            done_here += 1
            state.losses.append(total)
            state.parts.append(parts)
            state.wall_s += time.perf_counter() - t0
            recent = state.losses[-50:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
            bar.update(1)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                save_checkpoint(checkpoint, key=key, state=state, modules=modules, ema=ema, optimizer=optimizer)
    if done_here and state.step % cfg.checkpoint_every and state.step != cfg.steps:
        save_checkpoint(checkpoint, key=key, state=state, modules=modules, ema=ema, optimizer=optimizer)
    for m in modules.values():
        m.eval().requires_grad_(False)
    return StageResult(name, state, ema.shadow, state.step >= cfg.steps or state.closed_early)
