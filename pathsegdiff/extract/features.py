"""Noise, one UNet pass, hooks -> named multi-scale decoder feature maps.

Block names (``available_blocks``), in the order the UNet computes them:

- ``mid``: output of the middle block (coarsest resolution).
- ``up{i}.pre``: decoder level ``i`` (0 = coarsest) at its own resolution,
  i.e. the input of its upsampler.  Only levels that have an upsampler.
- ``up{i}``: output of decoder level ``i`` as diffusers' ``up_blocks[i]``
  returns it, i.e. after its upsampler (twice the ``.pre`` resolution);
  the last level has no upsampler and is at the latent resolution.

For the reference UNet (DESIGN.md 3) on a 256 px tile: mid 960x8x8,
up0.pre 960x8x8, up0 960x16x16, up1 576x32x32, up2 384x64x64, up3 192x64x64.

Default: ``up1`` and ``up2`` at t = 50 and 150, one draw.  DDPM-seg
(Baranchuk et al.) found the middle-to-late decoder blocks at small t the
most useful for segmentation; up1 + up2 are those blocks at 1/8 and 1/4 of
the tile size, 1.1 + 3 MiB per tile per timestep in float16 for the
reference model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.extract.ldm import LDM

DEFAULT_BLOCKS = ("up1", "up2")
DEFAULT_TIMESTEPS = (50, 150)


@dataclass(frozen=True)
class FeatureConfig:
    """Which blocks, timesteps and noise draws to extract."""

    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    draws: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(str(b) for b in self.blocks))
        object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if not self.blocks or len(set(self.blocks)) != len(self.blocks):
            raise ConfigError(f"blocks must be a non-empty list without repeats, got {list(self.blocks)}")
        if not self.timesteps or len(set(self.timesteps)) != len(self.timesteps):
            raise ConfigError(f"timesteps must be a non-empty list without repeats, got {list(self.timesteps)}")
        if any(t < 0 for t in self.timesteps):
            raise ConfigError(f"timesteps must be >= 0, got {list(self.timesteps)}")
        if int(self.draws) < 1:
            raise ConfigError(f"draws must be >= 1, got {self.draws}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"], d["timesteps"] = list(self.blocks), list(self.timesteps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        unknown = set(d) - {"blocks", "timesteps", "draws", "seed"}
        if unknown:
            raise ConfigError(f"unknown feature config keys: {sorted(unknown)}")
        return cls(**{**d, "blocks": tuple(d.get("blocks", DEFAULT_BLOCKS)),
                      "timesteps": tuple(d.get("timesteps", DEFAULT_TIMESTEPS))})


def available_blocks(ldm: LDM) -> list[str]:
    """Block names of this model, in the order the UNet computes them."""
    names = ["mid"] if getattr(ldm.unet, "mid_block", None) is not None else []
    for i, block in enumerate(ldm.unet.up_blocks):
        if block.upsamplers:
            names.append(f"up{i}.pre")
        names.append(f"up{i}")
    return names


def _check_blocks(ldm: LDM, blocks: tuple[str, ...]) -> None:
    valid = available_blocks(ldm)
    unknown = [b for b in blocks if b not in valid]
    if unknown:
        raise ConfigError(f"model {ldm.model_id} has no block(s) {unknown}; valid blocks: {', '.join(valid)}")


def block_shapes(ldm: LDM, cfg: FeatureConfig, tile_size: int) -> dict[str, tuple[int, int, int]]:
    """(C, h, w) of each requested block for a square tile, by arithmetic on the UNet's layout."""
    _check_blocks(ldm, cfg.blocks)
    unet = ldm.unet
    n_down = sum(1 for b in unet.down_blocks if b.downsamplers)
    step = ldm.downsample * 2**n_down
    if tile_size % step:
        raise ConfigError(f"tile size {tile_size} must be a multiple of {step} for model {ldm.model_id}")
    res = tile_size // step
    shapes: dict[str, tuple[int, int, int]] = {}
    if unet.mid_block is not None:
        shapes["mid"] = (unet.mid_block.resnets[-1].out_channels, res, res)
    for i, block in enumerate(unet.up_blocks):
        channels = block.resnets[-1].out_channels
        if block.upsamplers:
            shapes[f"up{i}.pre"] = (channels, res, res)
            res *= 2
        shapes[f"up{i}"] = (channels, res, res)
    return {name: shapes[name] for name in cfg.blocks}


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


class _Done(Exception):
    """Raised by the last needed hook: the rest of the UNet is not computed."""


class FeatureExtractor:
    """Runs the model on a batch of tiles and returns the hooked decoder features.

    ``per_tile`` (default: True on the CPU, False elsewhere) runs the VAE and
    the UNet on one tile at a time.  On the CPU torch picks the convolution
    kernel (oneDNN or im2col + GEMM) from the input size, so the same tile
    in a batch of 7 and alone differed by ~2e-5 (tiny model, fp32); one tile
    at a time always takes the same path, so features are bit-identical
    whatever the batch size, at the same speed (measured 0.102 s/tile both
    ways, tiny model, 256 px, 2 timesteps, one thread, on a 2-core machine
    shared with other jobs).  With oneDNN disabled, batches were also
    bit-identical but 1.5x slower (0.154 s/tile).  On a GPU the batch runs
    as one forward; bit-identity across batch sizes there is not promised.
    """

    def __init__(self, ldm: LDM, cfg: FeatureConfig, per_tile: bool | None = None):
        _check_blocks(ldm, cfg.blocks)
        n_steps = len(ldm.alphas_cumprod)
        bad = [t for t in cfg.timesteps if not 0 <= t < n_steps]
        if bad:
            raise ConfigError(f"timesteps {bad} are outside the model's schedule [0, {n_steps - 1}]")
        self.ldm = ldm
        self.cfg = cfg
        order = available_blocks(ldm)
        self._last = max(cfg.blocks, key=order.index)
        self.per_tile = per_tile

    def _chunks(self, batch: int) -> list[slice]:
        per_tile = self.ldm.device.type == "cpu" if self.per_tile is None else self.per_tile
        return [slice(i, i + 1) for i in range(batch)] if per_tile else [slice(0, batch)]

    def _hooks(self, captured: dict[str, torch.Tensor]) -> list[Any]:
        unet, wanted = self.ldm.unet, set(self.cfg.blocks)

        def keep(name: str, tensor: torch.Tensor) -> None:
            captured[name] = tensor
            if name == self._last:
                raise _Done

        handles = []
        if "mid" in wanted:
            handles.append(unet.mid_block.register_forward_hook(lambda m, a, out: keep("mid", out)))
        for i, block in enumerate(unet.up_blocks):
            if f"up{i}.pre" in wanted:
                handles.append(block.upsamplers[0].register_forward_pre_hook(
                    lambda m, args, kwargs, name=f"up{i}.pre": keep(name, args[0] if args else kwargs["hidden_states"]),
                    with_kwargs=True))
            if f"up{i}" in wanted:
                handles.append(block.register_forward_hook(lambda m, a, out, name=f"up{i}": keep(name, out)))
        return handles

    def _unet_blocks(self, zt: torch.Tensor, timestep: int, context: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = self._hooks(captured)
        t = torch.full((zt.shape[0],), timestep, device=zt.device, dtype=torch.long)
        try:
            self.ldm.unet(zt, t, encoder_hidden_states=context)
        except _Done:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured

    @torch.no_grad()
    def __call__(
        self, rgb_uint8: torch.Tensor, tile_ids: list[str], ssl: torch.Tensor | None
    ) -> tuple[dict[int, dict[str, torch.Tensor]], torch.Tensor]:
        """(B, 3, H, W) uint8 tiles -> (features[t][block] (B, C, h, w), latent z0 (B, c, h, w))."""
        if rgb_uint8.dtype != torch.uint8 or rgb_uint8.ndim != 4 or rgb_uint8.shape[1] != 3:
            raise InputError(f"expected a (B, 3, H, W) uint8 batch, got {tuple(rgb_uint8.shape)} {rgb_uint8.dtype}")
        if len(tile_ids) != rgb_uint8.shape[0]:
            raise InputError(f"{len(tile_ids)} tile ids for a batch of {rgb_uint8.shape[0]} tiles")
        device = self.ldm.device
        rgb = rgb_uint8.to(device).float() / 127.5 - 1.0
        chunks = self._chunks(len(tile_ids))
        z0 = torch.cat([self.ldm.encode(rgb[c]) for c in chunks])
        context = self.ldm.context(ssl, len(tile_ids))
        abar = self.ldm.alphas_cumprod
        features: dict[int, dict[str, torch.Tensor]] = {}
        for t in self.cfg.timesteps:
            a = float(abar[t])
            total: dict[str, torch.Tensor] = {}
            for draw in range(self.cfg.draws):
                eps = tile_noise(tuple(z0.shape[1:]), tile_ids, self.cfg.seed, t, draw).to(device, z0.dtype)
                zt = math.sqrt(a) * z0 + math.sqrt(1.0 - a) * eps
                parts = [self._unet_blocks(zt[c], t, context[c]) for c in chunks]
                blocks = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
                if self.cfg.draws == 1:
                    total = blocks
                else:  # average in float32, return in the dtype the UNet produced
                    for name, x in blocks.items():
                        total[name] = total[name] + x.float() if name in total else x.float()
            if self.cfg.draws > 1:
                dtype = blocks[self.cfg.blocks[0]].dtype
                total = {name: (x / self.cfg.draws).to(dtype) for name, x in total.items()}
            features[t] = {name: total[name] for name in self.cfg.blocks}
        return features, z0
