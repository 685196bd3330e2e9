"""What a pretraining run does: frozen configs, saved in every checkpoint and the model card.

A run has two stages that share one :class:`StageConfig` shape: the
first-stage autoencoder (a diffusers ``VQModel``) and the conditioned UNet on
its latents.  :class:`PretrainConfig` adds what both stages see: the crop
size, augmentation, seed, conditioning and device.  ``to_dict``/``from_dict``
round-trip through JSON, so a checkpoint carries the config it was made with
and a resume can refuse a different one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pathsegdiff.errors import ConfigError

ARCHITECTURES = ("tiny",)  # the seeded tiny model's UNet and VQ shapes (extract/backbones/tiny.py)
STAGES = ("autoencoder", "unet")


@dataclass(frozen=True)
class StageConfig:
    """One stage's optimisation: ``steps`` optimizer steps of ``batch_size`` x ``grad_accum`` crops."""

    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 50  # linear LR warm-up steps, then constant (so a run can be extended)
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1 or self.checkpoint_every < 1:
            raise ConfigError(f"stage config: steps >= 0, batch_size, grad_accum and checkpoint_every >= 1 "
                              f"(got {self.steps}, {self.batch_size}, {self.grad_accum}, {self.checkpoint_every})")
        if not self.lr > 0 or not 0 <= self.ema_decay < 1 or self.warmup < 0:
            raise ConfigError(f"stage config: lr > 0, 0 <= ema_decay < 1, warmup >= 0 "
                              f"(got {self.lr}, {self.ema_decay}, {self.warmup})")

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of each crop, drawn from a generator seeded by (seed, stage, step)."""

    flips: bool = True
    rot90: bool = True
    brightness: float = 0.05  # additive, in [0, 1] pixel units
    contrast: float = 0.1  # multiplicative around the crop mean
    saturation: float = 0.1
    channel_gain: float = 0.03  # per-channel multiplicative: a mild stain shift

    def __post_init__(self) -> None:
        for f in ("brightness", "contrast", "saturation", "channel_gain"):
            if not 0 <= getattr(self, f) < 1:
                raise ConfigError(f"augment {f} must be in [0, 1), got {getattr(self, f)}")


@dataclass(frozen=True)
class PretrainConfig:
    """The whole run: both stages, the crops they see, the conditioning and where it runs."""

    autoencoder: StageConfig = StageConfig(steps=2000, batch_size=8, lr=4e-4, ema_decay=0.995)
    unet: StageConfig = StageConfig(steps=10000, batch_size=16, lr=2e-4, ema_decay=0.999)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    architecture: str = "tiny"
    crop: int = 128  # training crops (px); the UNet is convolutional, extraction runs at the tile size
    conditioning: str = "null"  # null | hipt:PATH | precomputed:PATH, as extract's --conditioning
    ssl_dim: int = 384  # width of the embedding the projection takes (HIPT's CLS: 384)
    cond_dropout: float = 0.1  # embeddings zeroed with this probability, as the reference's training
    commitment: float = 0.25  # weight of the VQ commitment loss in the autoencoder stage
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None: torch's default

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.crop < 16 or self.crop % 16:
            raise ConfigError(f"crop must be a multiple of 16 (the VQ-f4 and the UNet's 3 downsamplings), got {self.crop}")
        if not 0 <= self.cond_dropout <= 1:
            raise ConfigError(f"cond_dropout must be in [0, 1], got {self.cond_dropout}")
        if self.ssl_dim < 1:
            raise ConfigError(f"ssl_dim must be >= 1, got {self.ssl_dim}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
        return getattr(self, name)

    def with_steps(self, autoencoder: int | None = None, unet: int | None = None) -> "PretrainConfig":
        return replace(self, autoencoder=replace(self.autoencoder, steps=self.autoencoder.steps if autoencoder is None
                                                 else autoencoder),
                       unet=replace(self.unet, steps=self.unet.steps if unet is None else unet))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"pretrain config: unknown keys {unknown}")
        for name in STAGES:
            if isinstance(d.get(name), dict):
                d[name] = StageConfig(**d[name])
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)


def resume_key(cfg: PretrainConfig, stage: str) -> dict[str, Any]:
    """What must match for a checkpoint of ``stage`` to be resumed: everything but the stages' step counts
    (a finished run can be extended) and the device/thread count (say so: CPU bits differ across thread counts)."""
    d = cfg.to_dict()
    for name in STAGES:
        d[name] = {k: v for k, v in d[name].items() if k not in ("steps", "checkpoint_every")}
    d.pop("device"), d.pop("threads")
    if stage == "autoencoder":  # the autoencoder does not see the UNet's settings
        for k in ("unet", "conditioning", "ssl_dim", "cond_dropout"):
            d.pop(k)
    return d
