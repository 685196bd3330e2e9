"""Fit one head on one seed: AdamW, cosine schedule, early stopping on validation mIoU.

The loop reads the store through :mod:`data`, keeps the best checkpoint on
disk and in memory, and records per-epoch loss, validation mIoU, and how
long the step waited on data versus computed.  Runs are deterministic under
a seed on the CPU (weights, shuffle order, augmentations and pixel samples
all derive from it).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.checkpoint import HeadMeta, build_head, save_head
from pathsegdiff.train_head.coefficients import coefficient_config, compose_head, store_bases
from pathsegdiff.train_head.data import TileDataset, make_loader
from pathsegdiff.train_head.heads import HEAD_KINDS, HeadConfig, SegHead
from pathsegdiff.train_head.metrics import ConfusionMatrix
from pathsegdiff.train_head.progress import bar


@dataclass(frozen=True)
class TrainConfig:
    """One training run (or ``runs`` runs with seeds seed, seed+1, ...)."""

    head: str = "fcn"
    blocks: tuple[str, ...] | None = None  # None: every block in the store
    timesteps: tuple[int, ...] | None = None  # None: every timestep in the store
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.0  # loss = CE + dice_weight * soft Dice
    patience: int = 8  # epochs without a better val mIoU before stopping
    label_fraction: float | int = 1.0  # a fraction of the train tiles, or a tile count
    runs: int = 1
    seed: int = 0  # run r trains with seed + r
    data_seed: int = 0  # fixes the carved val split and the label subset for every run
    val_fraction: float = 0.2  # used only when the store has no val split
    augment: bool = True  # random flips and quarter turns of features and labels
    workers: int = 0  # DataLoader worker processes
    device: str = "cpu"
    coefficients: bool = False  # train on a PCA store's coefficients; the head is saved composed (coefficients.py)
    head_options: Mapping[str, Any] = field(default_factory=dict)  # extra HeadConfig fields

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEAD_KINDS)}")
        for name in ("epochs", "batch_size", "runs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.dice_weight < 0:
            raise ConfigError("lr must be > 0, weight_decay and dice_weight >= 0")
        if self.workers < 0 or not 0 < self.val_fraction < 1:
            raise ConfigError("workers must be >= 0 and val_fraction in (0, 1)")
        reserved = {"kind", "blocks", "timesteps", "n_classes", "out_size"}
        bad = set(self.head_options) - ({f.name for f in fields(HeadConfig)} - reserved)
        if bad:
            raise ConfigError(f"unknown head options {sorted(bad)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = list(self.blocks) if self.blocks else None
        d["timesteps"] = list(self.timesteps) if self.timesteps else None
        d["head_options"] = dict(self.head_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown train-config fields {sorted(unknown)}")
        for key, cast in (("blocks", str), ("timesteps", int)):
            if d.get(key):
                d[key] = tuple(cast(v) for v in d[key])
        return cls(**d)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:n]``; asking for CUDA without a device is an error, not a fallback."""
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: no CUDA device is available to this torch ({torch.__version__}); use --device cpu"
            )
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; use cpu or cuda")


def to_device(features: Mapping, device: torch.device) -> dict[int, dict[str, torch.Tensor]]:
    """Move a batch's float16 features to the device as float32."""
    return {int(t): {b: x.to(device, non_blocking=True).float() for b, x in d.items()} for t, d in features.items()}


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, dice_weight: float
) -> torch.Tensor | None:
    """Cross-entropy over labelled pixels (+ soft Dice); None when the batch has no labelled pixel.

    ``logits`` is (B, K, H, W) with targets (B, H, W), or (N, K) with targets (N,).
    """
    valid = targets != ignore_index
    if not bool(valid.any()):
        return None
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
    if dice_weight > 0:
        k = logits.shape[1]
        probs = (logits.movedim(1, -1) if logits.dim() > 2 else logits).reshape(-1, k).softmax(-1)
        t = targets.reshape(-1)
        keep = valid.reshape(-1)
        probs, onehot = probs[keep], F.one_hot(t[keep], k).to(probs.dtype)
        inter, denom = (probs * onehot).sum(0), probs.sum(0) + onehot.sum(0)
        loss = loss + dice_weight * (1 - ((2 * inter + 1) / (denom + 1)).mean())
    return loss


@torch.no_grad()
def confusion_on(head: SegHead, loader, device: torch.device, n_classes: int, ignore_index: int,
                 progress: bool = False, desc: str = "validation") -> ConfusionMatrix:
    head.eval()
    cm = ConfusionMatrix(n_classes, ignore_index)
    for batch in bar(len(loader), desc, progress, iterable=loader):
        cm.update(head.predict(to_device(batch["features"], device)).cpu(), batch["labels"])
    return cm


@dataclass
class FitResult:
    head: SegHead
    meta: HeadMeta
    history: list[dict[str, float]]


def fit_one(
    where: str | Sequence[str],
    head_config: HeadConfig,
    meta_base: HeadMeta,
    train_idx,
    val_idx,
    config: TrainConfig,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> FitResult:
    """Train one head on tiles of the store(s) ``where`` (numbered across them); the best epoch by val mIoU is
    saved to ``out_dir`` and returned.  With ``config.coefficients`` it trains on PCA coefficients and both the
    saved and the returned head are composed onto ``head_config``'s features."""
    device = resolve_device(config.device)
    bases = None
    if config.coefficients:  # train on coefficients; save (and return) the head composed onto the features
        bases, record = store_bases(where, config.head)
        meta_base = HeadMeta(**{**meta_base.__dict__, "coefficients": record})

    def saved(h: SegHead) -> SegHead:
        return compose_head(h, head_config, bases) if bases else h

    torch.manual_seed(seed)
    head = build_head(coefficient_config(head_config, bases) if bases else head_config).to(device)
    ignore, n_classes = meta_base.ignore_index, head_config.n_classes
    names = [b.name for b in head_config.blocks]
    train_ds = TileDataset(where, train_idx, names, head_config.timesteps, augment=config.augment, seed=seed,
                           coefficients=config.coefficients)
    val_ds = TileDataset(where, val_idx, names, head_config.timesteps, coefficients=config.coefficients)
    train_dl = make_loader(train_ds, config.batch_size, True, config.workers, seed)
    val_dl = make_loader(val_ds, config.batch_size, False, config.workers, seed)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * len(train_dl))

    history: list[dict[str, float]] = []
    best, best_state, best_epoch, stale = -math.inf, None, 0, 0
    val_miou = math.nan
    for epoch in range(config.epochs):
        head.train()
        train_ds.set_epoch(epoch)
        total, n_steps, data_s, step_s = 0.0, 0, 0.0, 0.0
        desc = f"seed {seed} epoch {epoch + 1}/{config.epochs}"
        steps = bar(len(train_dl), desc, progress)
        t0 = time.perf_counter()
        for batch in train_dl:
            t1 = time.perf_counter()
            data_s += t1 - t0
            feats = to_device(batch["features"], device)  # {t: {block: (B, C, h, w)}}
            labels = batch["labels"].to(device)  # (B, H, W)
            logits, targets = head.training_logits(feats, labels, ignore)
            loss = segmentation_loss(logits, targets, ignore, config.dice_weight)
            if loss is not None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n_steps = total + loss.item(), n_steps + 1
            sched.step()
            steps.update(1)
            steps.set_postfix(loss=f"{total / max(n_steps, 1):.3f}", val_miou=f"{val_miou:.3f}")
            t0 = time.perf_counter()
            step_s += t0 - t1
        val_miou = confusion_on(head, val_dl, device, n_classes, ignore, progress, f"{desc}: validation").miou()
        steps.set_postfix(loss=f"{total / max(n_steps, 1):.3f}", val_miou=f"{val_miou:.3f}")
        steps.close()
        history.append({"epoch": epoch + 1, "train_loss": total / max(n_steps, 1), "val_miou": val_miou,
                        "lr": sched.get_last_lr()[0], "data_s": data_s, "compute_s": step_s})
        score = val_miou if math.isfinite(val_miou) else -1.0
        if score > best:
            best, best_epoch, stale = score, epoch + 1, 0
            best_state = copy.deepcopy(head.state_dict())
            meta = HeadMeta(**{**meta_base.__dict__, "seed": seed, "epoch": best_epoch,
                               "val_miou": val_miou if math.isfinite(val_miou) else None})
            save_head(out_dir, saved(head), meta)  # on disk at once: an interrupted run keeps its best head
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state)
    return FitResult(saved(head.eval()), meta, history)
