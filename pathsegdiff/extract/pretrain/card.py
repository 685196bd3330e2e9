"""The model card of a pretraining run: ``model_card.md``, ``model_card.json`` and ``loss.png``.

Written after every call of ``pretrain`` (also a partial one), so the card
always says how far training got: data, settings, steps reached, losses,
wall time per stage, the command, and the library versions.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

SMOOTH = 50


def _smooth(values: list[float], n: int = SMOOTH) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return v
    n = max(1, min(n, len(v) // 4 or 1))
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:n] / np.arange(1, n)
    return np.concatenate([head, (c[n:] - c[:-n]) / n])


def plot_losses(losses: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(losses)), figsize=(5 * max(1, len(losses)), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], losses.items()):
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, color="0.8", lw=0.6, label="per step")
            ax.plot(np.arange(1, len(values) + 1), _smooth(values), color="C0", lw=1.4, label=f"mean of {SMOOTH}")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_title(f"{name} loss")
        ax.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions() -> dict[str, str]:
    import diffusers

    from pathsegdiff import __version__

    return {"pathsegdiff": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def card_dict(config, tiles, stages: dict, result, command: str, call_wall_s: float) -> dict[str, Any]:
    per_stage = {}
    for name, s in stages.items():
        cfg = config.stage(name)
        per_stage[name] = {
            "steps_planned": cfg.steps, "steps_reached": s.state.step, "finished": s.finished,
            "closed_by_time_budget": s.state.closed_early,
            "samples_per_step": cfg.samples_per_step, "wall_s": round(s.state.wall_s, 1),
            "steps_per_s": round(s.state.step / s.state.wall_s, 4) if s.state.wall_s else None,
            "loss_first50": float(np.mean(s.state.losses[:50])) if s.state.losses else None,
            "loss_last50": result.final_loss.get(name),
        }
    return {"model": "pretrained conditioned LDM (pathsegdiff pretrain)", "finished": result.finished,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "config": config.to_dict(), "data": tiles.describe(), "stages": per_stage,
            "scale_factor": result.scale_factor, "this_call_wall_s": round(call_wall_s, 1),
            "threads": torch.get_num_threads(), "versions": _versions()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _markdown(d: dict) -> str:
    rows = "\n".join(
        f"| {n} | {s['steps_reached']} / {s['steps_planned']} | {s['samples_per_step']} | "
        f"{s['wall_s'] / 60:.1f} | {_fmt(s['loss_first50'])} | {_fmt(s['loss_last50'])} |"
        for n, s in d["stages"].items())
    sources = "\n".join(f"- {json.dumps(s, default=str)}" for s in d["data"]["sources"])
    c = d["config"]
    return f"""# Model card (pathsegdiff pretrain)

{"Training finished." if d["finished"] else "**Training not finished**: rerun the command to resume."}

- Architecture: `{c["architecture"]}` (UNet2DConditionModel + VQModel f4, SSL projection, 2 context tokens)
- Conditioning trained with: `{c["conditioning"]}` (condition dropout p={c["cond_dropout"]})
- Crops: {c["crop"]} px; augmentation: {json.dumps(c["augment"])}
- Schedule: scaled_linear 0.0015..0.0195, 1000 steps, eps-prediction; latent scale_factor {d["scale_factor"]}
- Seed {c["seed"]}, device `{c["device"]}`, {d["threads"]} torch threads; versions {json.dumps(d["versions"])}
- Date {d["date"]}

## Data

{d["data"]["n_tiles"]} tiles, {d["data"]["pixels"] / 1e6:.1f} Mpx.

{sources}

## Training

| stage | steps reached / planned | samples per step | wall time (min) | loss, first 50 steps | loss, last 50 steps |
|---|---|---|---|---|---|
{rows}

![losses](loss.png)

## Command

```
{d["command"]}
```
"""


def write_card(out: Path, config, tiles, stages: dict, result, command: str, call_wall_s: float) -> Path:
    d = card_dict(config, tiles, stages, result, command, call_wall_s)
    (out / "model_card.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
    (out / "model_card.md").write_text(_markdown(d))
    plot_losses({n: s.state.losses for n, s in stages.items()}, out / "loss.png")
    return out / "model_card.md"
