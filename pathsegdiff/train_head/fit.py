"""Fit one head on one seed: AdamW, cosine schedule, early stopping on validation mIoU.

The loop reads the store through :mod:`data`, keeps the best checkpoint on
disk and in memory, and records per-epoch loss, validation mIoU, and how
long the step waited on data versus computed.  Runs are deterministic under
a seed on the CPU (weights, shuffle order, augmentations and pixel samples
all derive from it).  Any head that follows the protocol of
``heads/protocol.py`` trains here, built-in or plug-in.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.checkpoint import HeadMeta, save_head
from pathsegdiff.train_head.coefficients import coefficient_config, compose_head, store_bases
from pathsegdiff.train_head.data import TileDataset, batch_inputs, make_loader, pixel_counts, to_device
from pathsegdiff.train_head.heads import (BUILTIN, HeadConfig, builtin_options, build_head, class_path_of,
                                          is_class_path, needs_rgb)
from pathsegdiff.train_head.heads import protocol
from pathsegdiff.train_head.losses import LOSSES, auto_class_weights, parse_class_weights, segmentation_loss
from pathsegdiff.train_head.metrics import ConfusionMatrix
from pathsegdiff.train_head.progress import bar
from pathsegdiff.train_head.splits import SYNTHETIC_CHOICES

LABEL_DRAWS = ("fixed", "per-run")

__all__ = ["FitResult", "TrainConfig", "dry_run", "fit_head", "fit_one", "resolve_class_weights", "resolve_device",
           "segmentation_loss", "to_device"]

RENAMED = {"workers": "loader_workers"}  # run.json fields of earlier versions -> their names now


@dataclass(frozen=True)
class TrainConfig:
    """One training run (or ``runs`` runs with seeds seed, seed+1, ...)."""

    head: str = "fcn"  # a built-in name, or a plug-in's class path (file.py:Class, package.module:Class)
    blocks: tuple[str, ...] | None = None  # None: every block in the store
    timesteps: tuple[int, ...] | None = None  # None: every timestep in the store
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.0  # loss = CE (or focal) + dice_weight * soft Dice
    loss: str = "ce"  # ce or focal (losses.py)
    focal_gamma: float = 2.0  # focal loss: (1 - p)^gamma
    class_weights: str | tuple[float, ...] | None = None  # None, "auto" (inverse pixel frequencies) or per class
    patience: int = 8  # epochs without a better val mIoU before stopping
    label_fraction: float | int = 1.0  # a fraction of the train tiles, or a tile count
    runs: int = 1
    seed: int = 0  # run r trains with seed + r
    data_seed: int = 0  # fixes the carved val split and the label subset for every run
    val_fraction: float = 0.2  # used only when the store has no val split
    augment: bool = True  # d4: random flips and quarter turns of features, RGB and labels together
    loader_workers: int = 0  # DataLoader worker processes
    device: str = "cpu"
    coefficients: bool = False  # train on a PCA store's coefficients; the head is saved composed (coefficients.py)
    head_options: Mapping[str, Any] = field(default_factory=dict)  # a built-in's fields, a plug-in's keyword args
    allow_partial: bool = False  # evaluate on a store whose evaluated split has no written tile yet
    synthetic: str = "include"  # the stores' synthetic tiles in training: include, exclude or only (splits.py)
    label_draws: str = "fixed"  # fixed: one label subset (data_seed) for every run; per-run: run r draws its own

    def __post_init__(self) -> None:
        if isinstance(self.head, type):  # a class object (a notebook): the class path of its file
            object.__setattr__(self, "head", class_path_of(self.head))
        if not is_class_path(self.head) and self.head not in BUILTIN:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(BUILTIN)}, or a plug-in as "
                              "path/to/heads.py:Class or package.module:Class")
        for name in ("epochs", "batch_size", "runs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.dice_weight < 0 or self.focal_gamma < 0:
            raise ConfigError("lr must be > 0, weight_decay, dice_weight and focal_gamma >= 0")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.loader_workers < 0 or not 0 < self.val_fraction < 1:
            raise ConfigError("loader_workers must be >= 0 and val_fraction in (0, 1)")
        object.__setattr__(self, "class_weights", parse_class_weights(self.class_weights))
        if self.label_draws not in LABEL_DRAWS:
            raise ConfigError(f"--label-draws {self.label_draws!r}: choose {' or '.join(LABEL_DRAWS)}")
        if self.synthetic not in SYNTHETIC_CHOICES:
            raise ConfigError(f"--synthetic {self.synthetic!r}: choose include, exclude or only")
        if not isinstance(self.head_options, Mapping):
            raise ConfigError(f"head options must be a JSON object of keyword arguments, got {self.head_options!r}")
        bad = set(self.head_options) - builtin_options()
        if not is_class_path(self.head) and bad:
            raise ConfigError(f"unknown head options {sorted(bad)} for the {self.head} head; it takes "
                              f"{', '.join(sorted(builtin_options()))}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = list(self.blocks) if self.blocks else None
        d["timesteps"] = list(self.timesteps) if self.timesteps else None
        d["head_options"] = dict(self.head_options)
        d["class_weights"] = list(self.class_weights) if isinstance(self.class_weights, tuple) else self.class_weights
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A recorded config; fields it predates read as their defaults, renamed fields by their new names."""
        d = {RENAMED.get(k, k): v for k, v in d.items()}
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


def resolve_class_weights(config: TrainConfig, where: str | Sequence[str], train_idx, n_classes: int,
                          ignore_index: int) -> np.ndarray | None:
    """The class weights the loss uses: None, the given ones, or ``auto`` from the training tiles' pixels."""
    if config.class_weights is None:
        return None
    if config.class_weights == "auto":
        return auto_class_weights(pixel_counts(where, train_idx, n_classes, ignore_index))
    if len(config.class_weights) != n_classes:
        raise ConfigError(f"--class-weights gives {len(config.class_weights)} weights for {n_classes} classes")
    return np.asarray(config.class_weights, np.float64)


def dry_run(head: nn.Module, dataset: TileDataset, n_classes: int, device: torch.device) -> None:
    """One forward on a batch of up to two tiles: a head that breaks the protocol is refused before training."""
    batch = default_collate([dataset[i] for i in range(min(2, len(dataset)))])
    was_training = head.training
    head.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        protocol.logits(head, batch_inputs(batch, device, dataset.spec.out_size, needs_rgb(head)), n_classes)
    head.train(was_training)


@torch.no_grad()
def confusion_on(head: nn.Module, loader, device: torch.device, n_classes: int, ignore_index: int, size: int,
                 progress: bool = False, desc: str = "validation") -> ConfusionMatrix:
    head.eval()
    cm = ConfusionMatrix(n_classes, ignore_index)
    rgb = needs_rgb(head)
    for batch in bar(len(loader), desc, progress, iterable=loader):
        inputs = batch_inputs(batch, device, size, rgb)
        cm.update(protocol.predict_classes(head, inputs, n_classes).cpu(), batch["labels"])
    return cm


@dataclass
class FitResult:
    """The best epoch's head (in eval mode), what its checkpoint records, and the per-epoch history."""

    head: nn.Module
    meta: HeadMeta
    history: list[dict[str, float]]

    def line(self) -> str:
        m = self.meta
        val = "n/a" if m.val_miou is None else f"{m.val_miou:.4f}"
        return (f"{m.head.kind} head, seed {m.seed}: best epoch {m.epoch} of {len(self.history)}, "
                f"val mIoU {val}")


def fit_head(head: nn.Module, train_ds: TileDataset, val_ds: TileDataset, config: TrainConfig, meta: HeadMeta,
             seed: int, out_dir: Path | None = None, progress: bool = True, weights: np.ndarray | None = None,
             saved: Callable[[nn.Module], nn.Module] = lambda h: h) -> FitResult:
    """Train ``head`` (freshly built) on ``train_ds``, stop early on ``val_ds``'s mIoU; the best epoch is kept
    (and saved to ``out_dir`` as ``saved(head)`` at once, so an interrupted run keeps its best head)."""
    device = resolve_device(config.device)
    head = head.to(device)
    ignore, n_classes, size = meta.ignore_index, meta.head.n_classes, meta.head.out_size
    rgb = needs_rgb(head)
    train_ds = train_ds.with_options(augment=config.augment, seed=seed, with_rgb=rgb)
    val_ds = val_ds.with_options(augment=False, with_rgb=rgb)
    train_dl = make_loader(train_ds, config.batch_size, True, config.loader_workers, seed)
    val_dl = make_loader(val_ds, config.batch_size, False, config.loader_workers, seed)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * len(train_dl))
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)

    history: list[dict[str, float]] = []
    best, best_state, best_meta, stale = -math.inf, None, meta, 0
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
            inputs = batch_inputs(batch, device, size, rgb)  # features {t: {block: (B, C, h, w)}}, rgb (B, 3, H, W)
            labels = batch["labels"].to(device)  # (B, H, W)
            logits, targets = protocol.training_logits(head, inputs, labels, ignore, n_classes)
            loss = segmentation_loss(logits, targets, ignore, config.dice_weight, loss=config.loss, weights=w,
                                     gamma=config.focal_gamma)
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
        val_miou = confusion_on(head, val_dl, device, n_classes, ignore, size, progress,
                                f"{desc}: validation").miou()
        steps.set_postfix(loss=f"{total / max(n_steps, 1):.3f}", val_miou=f"{val_miou:.3f}")
        steps.close()
        history.append({"epoch": epoch + 1, "train_loss": total / max(n_steps, 1), "val_miou": val_miou,
                        "lr": sched.get_last_lr()[0], "data_s": data_s, "compute_s": step_s})
        score = val_miou if math.isfinite(val_miou) else -1.0
        if score > best:
            best, stale = score, 0
            best_state = copy.deepcopy(head.state_dict())
            best_meta = HeadMeta(**{**meta.__dict__, "seed": seed, "epoch": epoch + 1,
                                    "val_miou": val_miou if math.isfinite(val_miou) else None})
            if out_dir is not None:
                save_head(out_dir, saved(head), best_meta)
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state)
    return FitResult(saved(head.eval()), best_meta, history)


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
    cls: type | None = None,
    weights: np.ndarray | None = None,
) -> FitResult:
    """Train one head on tiles of the store(s) ``where`` (numbered across them); the best epoch by val mIoU is
    saved to ``out_dir`` and returned.  ``cls``: a plug-in head's class.  With ``config.coefficients`` it trains
    on PCA coefficients and both the saved and the returned head are composed onto ``head_config``'s features."""
    bases = None
    if config.coefficients:  # train on coefficients; save (and return) the head composed onto the features
        bases, record = store_bases(where, config.head)
        meta_base = HeadMeta(**{**meta_base.__dict__, "coefficients": record})

    def saved(h: nn.Module) -> nn.Module:
        return compose_head(h, head_config, bases) if bases else h

    torch.manual_seed(seed)
    head = build_head(coefficient_config(head_config, bases) if bases else head_config, cls)
    names = [b.name for b in head_config.blocks]
    train_ds = TileDataset(where, train_idx, names, head_config.timesteps, coefficients=config.coefficients)
    val_ds = TileDataset(where, val_idx, names, head_config.timesteps, coefficients=config.coefficients)
    return fit_head(head, train_ds, val_ds, config, meta_base, seed, out_dir, progress, weights, saved)
