"""Fuse overlapping tile logits into one map, strip by strip, in bounded memory.

Tiles arrive in raster order (sorted by y, then x).  Each tile's logits are
weighted by a window (centre-weighted Gaussian, flat mean, or none = the last
tile wins) and accumulated into a buffer that holds only the rows still
reachable by a later tile; rows above the current tile's top edge are final
and are handed out as fused-logit strips (C, rows, width), NaN where no
tile covered a pixel (a slide's background without tissue).  Memory is about
``tile x width x classes`` floats, whatever the image height.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pathsegdiff.errors import ConfigError

WINDOWS = ("gaussian", "mean", "none")


@dataclass(frozen=True)
class StitchConfig:
    tile: int = 256
    overlap: int = 64
    window: str = "gaussian"
    sigma_scale: float = 0.125  # sigma = tile / 8, as nnU-Net's sliding window

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ConfigError(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(f"overlap must be in 0..{self.tile - 1}, got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def to_dict(self) -> dict:
        return {"tile": self.tile, "overlap": self.overlap, "window": self.window, "sigma_scale": self.sigma_scale}

    @classmethod
    def from_dict(cls, d: dict) -> StitchConfig:
        return cls(**d)


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering ``length``; the last tile is aligned to the end (no padding needed)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, cfg: StitchConfig) -> list[tuple[int, int]]:
    """(y, x) of every tile, in raster order."""
    return [(y, x) for y in tile_origins(height, cfg.tile, cfg.stride) for x in tile_origins(width, cfg.tile, cfg.stride)]


def window_weights(cfg: StitchConfig) -> np.ndarray:
    """(tile, tile) float32 weights, 1 at the centre; never 0, so every pixel is covered."""
    t = cfg.tile
    if cfg.window != "gaussian":
        return np.ones((t, t), np.float32)
    r = np.arange(t, dtype=np.float64) - (t - 1) / 2
    g = np.exp(-(r**2) / (2 * (cfg.sigma_scale * t) ** 2))
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


class LogitFuser:
    """Accumulates weighted tile logits; yields finished (y0, logits strip (C, rows, W)) pairs."""

    def __init__(self, height: int, width: int, num_classes: int, cfg: StitchConfig):
        self.h, self.w, self.c, self.cfg = height, width, num_classes, cfg
        self.weights = window_weights(cfg)
        self.top = 0  # first row still held in the buffer
        self.sum = np.zeros((num_classes, 0, width), np.float32)
        self.norm = np.zeros((0, width), np.float32)
        self.last_y = -1

    def add(self, y: int, x: int, logits: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Add one tile's logits (C, th, tw) at (y, x); yields strips that became final."""
        if y < self.last_y:
            raise ConfigError(f"tiles must come in raster order (got y={y} after y={self.last_y})")
        self.last_y = y
        yield from self._emit_until(y)
        c, th, tw = logits.shape
        th, tw = min(th, self.h - y), min(tw, self.w - x)  # a tile may overhang the right/bottom edge
        need = y + th - self.top
        if need > self.norm.shape[0]:
            grow = need - self.norm.shape[0]
            self.sum = np.concatenate([self.sum, np.zeros((self.c, grow, self.w), np.float32)], axis=1)
            self.norm = np.concatenate([self.norm, np.zeros((grow, self.w), np.float32)], axis=0)
        r0 = y - self.top
        wgt = self.weights[:th, :tw]
        if self.cfg.window == "none":  # the later tile replaces what it covers
            self.sum[:, r0 : r0 + th, x : x + tw] = logits[:, :th, :tw]
            self.norm[r0 : r0 + th, x : x + tw] = 1.0
        else:
            self.sum[:, r0 : r0 + th, x : x + tw] += logits[:, :th, :tw] * wgt
            self.norm[r0 : r0 + th, x : x + tw] += wgt

    def _emit_until(self, row: int) -> Iterator[tuple[int, np.ndarray]]:
        n = min(row, self.top + self.norm.shape[0]) - self.top
        if n <= 0:
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            fused = self.sum[:, :n] / self.norm[:n]  # NaN where no tile covered a pixel
        yield self.top, fused
        self.sum, self.norm = self.sum[:, n:], self.norm[n:]
        self.top += n

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield the remaining rows."""
        yield from self._emit_until(self.h)


def fuse_tiles(tiles, height: int, width: int, num_classes: int, cfg: StitchConfig) -> np.ndarray:
    """All fused logits (C, H, W) of an image small enough to hold; ``tiles`` yields (y, x, logits)."""
    out = np.zeros((num_classes, height, width), np.float32)
    fuser = LogitFuser(height, width, num_classes, cfg)
    for y, x, logits in tiles:
        for y0, strip in fuser.add(y, x, logits):
            out[:, y0 : y0 + strip.shape[1]] = strip
    for y0, strip in fuser.finish():
        out[:, y0 : y0 + strip.shape[1]] = strip
    return out
