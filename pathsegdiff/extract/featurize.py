"""The one path from a batch of uint8 tiles to named feature maps: extract, predict, doctor and bench use it.

Per tile: embed it for conditioning, encode it (``Backbone.encode``), and for
each timestep t add noise ``zt = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` drawn
from a seed of (seed, tile id, t, draw), so features do not depend on batch
size, order or resume; then run the backbone's partial forward up to the last
requested block.  A model without a noise schedule (a ViT) sees the clean
tile once, at timestep 0.  A model with a fixed patch grid (a ViT) gets each tile
resized to its input size first (``Backbone.input_size``: for a patch-14 ViT,
252 px for a 256 px tile; ``FeatureConfig.input_size`` sets another), so a
baseline store holds the same tiles, ids, labels and RGB as a diffusion store
of the same source; every other model sees the tile at its own size.

Defaults come from the backbone: for a UNet LDM ``up1`` and ``up2`` at
t = 50 and 150 (DDPM-seg, Baranchuk et al., found the middle-to-late decoder
blocks at small t the most useful for segmentation; for the reference model
1.1 + 3 MiB per tile per timestep in float16).

``compile=True`` runs the backbone's ``encode`` and ``forward_blocks``
through ``torch.compile`` (inductor) on channels-last inputs; if compiling
fails, one warning line and the eager path (``compiled.py``).  Features are
cast to the storage dtype and made contiguous on the device, and on a GPU
each tile's finiteness is checked there too (``Featurized.finite``), so the
host copies and checks nothing it need not.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.extract.backbones import Backbone, load_backbone
from pathsegdiff.extract.compiled import CompiledForward
from pathsegdiff.extract.conditioning import Conditioner, NullConditioner, make_conditioner

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FeatureConfig:
    """Which blocks, timesteps and noise draws to extract; ``None``: the backbone's default."""

    blocks: tuple[str, ...] | None = None
    timesteps: tuple[int, ...] | None = None
    draws: int = 1
    seed: int = 0
    input_size: int | None = None  # a ViT's input side in px; None: the largest patch multiple not above the tile

    def __post_init__(self) -> None:
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(str(b) for b in self.blocks))
            if not self.blocks or len(set(self.blocks)) != len(self.blocks):
                raise ConfigError(f"blocks must be a non-empty list without repeats, got {list(self.blocks)}")
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
            if not self.timesteps or len(set(self.timesteps)) != len(self.timesteps):
                raise ConfigError(f"timesteps must be a non-empty list without repeats, got {list(self.timesteps)}")
            if any(t < 0 for t in self.timesteps):
                raise ConfigError(f"timesteps must be >= 0, got {list(self.timesteps)}")
        if int(self.draws) < 1:
            raise ConfigError(f"draws must be >= 1, got {self.draws}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", int(self.input_size))

    def resolved(self, backbone: Backbone) -> "FeatureConfig":
        """The backbone's defaults filled in, checked against what it offers."""
        cfg = replace(self, blocks=self.blocks or backbone.default_blocks,
                      timesteps=self.timesteps or backbone.default_timesteps)
        backbone.check_blocks(cfg.blocks)
        if cfg.input_size is not None:  # refused by a model that takes tiles at their own size
            backbone.input_size(cfg.input_size, cfg.input_size)
        if backbone.is_diffusion:
            n_steps = len(backbone.alphas_cumprod)
            bad = [t for t in cfg.timesteps if not 0 <= t < n_steps]
            if bad:
                raise ConfigError(f"timesteps {bad} are outside the model's schedule [0, {n_steps - 1}]")
        elif cfg.timesteps != (0,) or cfg.draws != 1:
            raise ConfigError(f"model {backbone.model_id} is not a diffusion model: it sees the clean tile once; "
                              "use --timesteps 0 and --draws 1")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        d["timesteps"] = list(self.timesteps) if self.timesteps is not None else None
        if self.input_size is None:  # the default: configs from before the option read the same
            del d["input_size"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        unknown = set(d) - {"blocks", "timesteps", "draws", "seed", "input_size"}
        if unknown:
            raise ConfigError(f"unknown feature config keys: {sorted(unknown)}")
        return cls(**{**d, "blocks": tuple(d["blocks"]) if d.get("blocks") else None,
                      "timesteps": tuple(d["timesteps"]) if d.get("timesteps") else None})


def noise_seed(global_seed: int, tile_id: str, timestep: int, draw: int) -> int:
    """A 63-bit seed from (global seed, tile id, timestep, draw); stable across runs and machines."""
    key = f"{int(global_seed)}\x1f{tile_id}\x1f{int(timestep)}\x1f{int(draw)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def tile_noise(shape: tuple[int, ...], tile_ids: list[str], seed: int, timestep: int, draw: int) -> torch.Tensor:
    """(B, *shape) standard normal float32 on the CPU, one generator per tile."""
    out = torch.empty((len(tile_ids), *shape), dtype=torch.float32)
    for i, tile_id in enumerate(tile_ids):
        gen = torch.Generator().manual_seed(noise_seed(seed, tile_id, timestep, draw))
        out[i] = torch.randn(shape, generator=gen, dtype=torch.float32)
    return out


def load_on_device(model: str, device: str) -> Backbone:
    """``load_backbone``, after checking that torch can use ``device``."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device: use --device cpu, "
                          "or install the CUDA build of torch into this environment (the command for your "
                          "driver's CUDA version is on pytorch.org, 'Get started')")
    return load_backbone(model, device=device)


@dataclass
class Featurized:
    """One batch: ``features[t][block]`` (B, C, h, w) in the requested dtype, the encoded tiles and the embedding."""

    features: dict[int, dict[str, torch.Tensor]]
    latent: torch.Tensor
    ssl: torch.Tensor
    finite: dict[int, dict[str, torch.Tensor]] | None = None  # (B,) bool per block, computed on a GPU; else None


class Featurizer:
    """A backbone, its conditioner and the feature selection: call it on (B, 3, H, W) uint8 tiles.

    ``per_tile`` (default: True on the CPU, False elsewhere) runs the model
    on one tile at a time.  On the CPU torch picks the convolution kernel
    (oneDNN or im2col + GEMM) from the input size, so the same tile in a
    batch of 7 and alone differed by ~2e-5 (tiny model, fp32); one tile at a
    time always takes the same path, so features are bit-identical whatever
    the batch size, at the same speed (measured 0.102 s/tile both ways, tiny
    model, 256 px, 2 timesteps, one thread).  On a GPU the batch runs as one
    forward; bit-identity across batch sizes there is not promised.
    """

    def __init__(self, backbone: Backbone, cfg: FeatureConfig = FeatureConfig(),
                 conditioner: Conditioner | None = None, compute_dtype: str = "fp32", per_tile: bool | None = None,
                 compile: bool = False):
        if compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
        self.backbone = backbone
        self.cfg = cfg.resolved(backbone)
        self.conditioner = conditioner or NullConditioner(backbone.ssl_dim)
        self.compute_dtype = compute_dtype
        self.per_tile = per_tile
        self.compiled = CompiledForward(backbone) if compile else None

    @classmethod
    def load(cls, model: str, conditioning: str = "null", cfg: FeatureConfig = FeatureConfig(),
             device: str = "cpu", compute_dtype: str = "fp32", backbone: Backbone | None = None,
             compile: bool = False) -> "Featurizer":
        """Load ``model`` (or use the already-built ``backbone``) and its conditioner on ``device``."""
        backbone = load_on_device(model, device) if backbone is None else backbone
        return cls(backbone, cfg, make_conditioner(conditioning, backbone, device=device), compute_dtype,
                   compile=compile)

    def warning(self) -> str:
        b = self.backbone
        return (f"model {b.model_id}: weights are seeded, NOT trained; use it to test the pipeline, "
                "not for science") if b.untrained else ""

    def input_size(self, tile_size: int) -> int:
        """The side, in pixels, a ``tile_size`` tile is resized to for the model (the tile's own for most)."""
        return self.backbone.input_size(tile_size, self.cfg.input_size)

    def block_shapes(self, tile_size: int) -> dict[str, tuple[int, int, int]]:
        shapes = self.backbone.block_shapes(self.input_size(tile_size))
        return {name: shapes[name] for name in self.cfg.blocks}

    def _autocast(self):
        if self.compute_dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.backbone.device.type, dtype=COMPUTE_DTYPES[self.compute_dtype])

    def _chunks(self, batch: int) -> list[slice]:
        per_tile = self.backbone.device.type == "cpu" if self.per_tile is None else self.per_tile
        return [slice(i, i + 1) for i in range(batch)] if per_tile else [slice(0, batch)]

    @torch.no_grad()
    def __call__(self, rgb_uint8: torch.Tensor, tile_ids: list[str], out_dtype: torch.dtype | None = None,
                 ssl: torch.Tensor | None = None) -> Featurized:
        """(B, 3, H, W) uint8 tiles -> features, cast to ``out_dtype`` on the device (half the bytes to copy back).

        ``ssl``: a (B, dim) embedding to use instead of the conditioner's.
        """
        if rgb_uint8.dtype != torch.uint8 or rgb_uint8.ndim != 4 or rgb_uint8.shape[1] != 3:
            raise InputError(f"expected a (B, 3, H, W) uint8 batch, got {tuple(rgb_uint8.shape)} {rgb_uint8.dtype}")
        if len(tile_ids) != rgb_uint8.shape[0]:
            raise InputError(f"{len(tile_ids)} tile ids for a batch of {rgb_uint8.shape[0]} tiles")
        with self._autocast():
            if ssl is None:
                ssl = self.conditioner.embed(rgb_uint8, tile_ids)
            features, z0 = self._features(rgb_uint8, tile_ids, ssl)
        finite = None
        if out_dtype is not None:  # on the device: half the bytes to copy back, in the layout the store wants
            features = {t: {b: x.to(out_dtype).contiguous() for b, x in d.items()} for t, d in features.items()}
            if self.backbone.device.type == "cuda":  # free there; on the CPU the store's bit test is faster
                finite = {t: {b: torch.isfinite(x).flatten(1).all(dim=1) for b, x in d.items()}
                          for t, d in features.items()}
        return Featurized(features, z0, ssl, finite)

    def _features(self, rgb_uint8, tile_ids, ssl):
        backbone, cfg = self.backbone, self.cfg
        rgb = rgb_uint8.to(backbone.device).float() / 127.5 - 1.0
        rgb = resize_tiles(rgb, self.input_size(rgb.shape[-2]), self.input_size(rgb.shape[-1]))
        chunks = self._chunks(len(tile_ids))
        run = self.compiled or backbone
        z0 = _cat([run.encode(rgb[c]) for c in chunks])
        context = backbone.context(ssl, len(tile_ids))

        def forward(x: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
            parts = [run.forward_blocks(x[c], t, None if context is None else context[c], cfg.blocks)
                     for c in chunks]
            return {name: _cat([p[name] for p in parts]) for name in cfg.blocks}

        if not backbone.is_diffusion:
            return {t: forward(z0, t) for t in cfg.timesteps}, z0
        features: dict[int, dict[str, torch.Tensor]] = {}
        for t in cfg.timesteps:
            a = float(backbone.alphas_cumprod[t])
            draws = []
            for draw in range(cfg.draws):
                eps = tile_noise(tuple(z0.shape[1:]), tile_ids, cfg.seed, t, draw).to(z0.device, z0.dtype)
                draws.append(forward(math.sqrt(a) * z0 + math.sqrt(1.0 - a) * eps, t))
            if cfg.draws == 1:
                features[t] = draws[0]
            else:  # average in float32, return in the dtype the model produced
                features[t] = {name: (sum(d[name].float() for d in draws) / cfg.draws).to(draws[0][name].dtype)
                               for name in cfg.blocks}
        return features, z0


def resize_tiles(rgb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, height, width): bicubic with antialiasing (as torchvision's and PIL's
    resize), clamped to [-1, 1] as a resized uint8 image would be; the same tensor when already that size."""
    if tuple(rgb.shape[-2:]) == (height, width):
        return rgb
    return F.interpolate(rgb, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp_(-1, 1)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # a whole batch needs no copy
