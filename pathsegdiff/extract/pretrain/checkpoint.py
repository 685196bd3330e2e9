"""A stage's training state on disk: written atomically, read back for an exact resume.

One file per stage (``training/<stage>.pt``) holds the config key it was
made with, the step, the weights, the EMA weights, the optimizer state, the
loss history, the wall time so far and the RNG states (torch, numpy,
python).  Batches and noise do not depend on the RNG states (they are a
function of the seed and the step, ``batches.py``); the states are restored
anyway so that any code drawing from the global generators resumes too.
The file is written to a temporary name and renamed, so a kill while saving
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathsegdiff.errors import ConfigError, ModelLoadError


@dataclass
class StageState:
    """What a stage has done so far (``losses[i]`` is the loss of optimizer step ``i``)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    closed_early: bool = False  # the stage's time budget ran out: it counts as finished at ``step``


def rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: Path, *, key: dict, state: StageState, modules: dict, ema, optimizer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "key": key, "step": state.step, "losses": state.losses, "parts": state.parts, "wall_s": state.wall_s,
        "closed_early": state.closed_early, "modules": {n: m.state_dict() for n, m in modules.items()}, "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": rng_states(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, *, key: dict, modules: dict, ema, optimizer) -> StageState:
    """Restore everything saved by :func:`save_checkpoint`; refuse a checkpoint of another config."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimizer + RNG states
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read the training checkpoint ({exc}); delete it to restart the stage") from exc
    if payload.get("key") != key:
        differing = sorted(k for k in set(key) | set(payload.get("key", {})) if key.get(k) != payload["key"].get(k))
        raise ConfigError(f"{path}: checkpoint made with other settings ({', '.join(differing)}); use the same "
                          "settings to resume, or another output directory (or pass --overwrite) to start afresh")
    for name, module in modules.items():
        module.load_state_dict(payload["modules"][name])
    ema.load_state_dict(payload["ema"])
    optimizer.load_state_dict(payload["optimizer"])
    restore_rng(payload["rng"])
    return StageState(int(payload["step"]), list(payload["losses"]), list(payload["parts"]), float(payload["wall_s"]),
                      bool(payload.get("closed_early", False)))
