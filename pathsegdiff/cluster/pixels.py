"""The written tiles of one store or several, read as one, as per-pixel feature vectors at one resolution.

Stores must hold the same features (every identity field of their
``FeatureSpec``: model, weights, blocks and their shapes, timesteps, noise,
encoding); the first difference is refused in one line naming both stores.
Tile ``r`` of the feed is a (store, index) pair; rows follow the stores in
the order given and each store's written tiles in index order.

Each tile's selected blocks, at each selected timestep, are resized to one
``size x size`` grid (bilinear up, area-averaged down) and concatenated
along channels in the order ``for t in timesteps: for b in blocks``.
:class:`Standardiser` keeps per-channel means and variances over every pixel
streamed through it (Chan et al.'s pairwise merge, in float64).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pathsegdiff.errors import ConfigError, InputError, SchemaError
from pathsegdiff.store import FeatureStore, open_store

FIRST_FIELDS = ("blocks", "timesteps")  # what users choose, so named first when they differ


def check_same_features(stores: Sequence[FeatureStore]) -> None:
    a = stores[0]
    fa = a.schema.features.identity_fields()
    for b in stores[1:]:
        fb = b.schema.features.identity_fields()
        keys = [*FIRST_FIELDS, *sorted((set(fa) | set(fb)) - set(FIRST_FIELDS))]
        diff = [k for k in keys if fa.get(k) != fb.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(f"{b.location}: its {k} differ from {a.location}'s: {fb.get(k)!r} against "
                              f"{fa.get(k)!r}; cluster stores of the same features only")


def selection(fs: FeatureStore, blocks: Sequence[str] | None, timesteps: Sequence[int] | None
              ) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The blocks and timesteps asked for (None: all the store holds), each checked against the store."""
    blocks = tuple(blocks) if blocks else fs.blocks
    timesteps = tuple(int(t) for t in timesteps) if timesteps else fs.timesteps
    for what, asked, held in (("block", blocks, fs.blocks), ("timestep", timesteps, fs.timesteps)):
        for x in asked:
            if x not in held:
                raise SchemaError(f"{fs.location}: no {what} {x!r}; the store has {', '.join(map(str, held))}")
        if len(set(asked)) != len(asked):
            raise ConfigError(f"a {what} is given twice: {', '.join(map(str, asked))}")
    return blocks, timesteps


@dataclass
class Batch:
    rows: np.ndarray  # (B,) feed rows
    features: np.ndarray  # (B, C, size, size) float32
    labels: np.ndarray | None  # (B, T, T) uint8, or None when the stores hold none


class TileFeed:
    """Every written tile of ``wheres``; ``channels`` lists (timestep, block, channels) in concatenation order."""

    def __init__(self, wheres: Sequence[str], blocks: Sequence[str] | None, timesteps: Sequence[int] | None,
                 size: int | None):
        self.wheres = tuple(str(w) for w in wheres)
        if not self.wheres:
            raise ConfigError("give at least one store")
        if len(set(self.wheres)) != len(self.wheres):
            raise ConfigError(f"a store is given twice: {', '.join(self.wheres)}")
        self.stores = [open_store(w) for w in self.wheres]
        check_same_features(self.stores)
        first = self.stores[0]
        self.blocks, self.timesteps = selection(first, blocks, timesteps)
        spec = first.schema.features
        shapes = [spec.block(b) for b in self.blocks]
        finest = max(shapes, key=lambda s: s.height * s.width)
        self.size = (finest.height, finest.width) if size is None else (int(size), int(size))
        self.channels = [(t, b.name, b.channels) for t in self.timesteps for b in shapes]
        self.n_channels = sum(c for _, _, c in self.channels)
        self.tile_size = first.schema.tile_size
        per_store = [s.written() for s in self.stores]
        for s, w in zip(self.stores, per_store):
            if not len(w):
                raise InputError(f"{s.location}: the store has no written tiles; extract into it first")
        self.store_of = np.concatenate([np.full(len(w), k) for k, w in enumerate(per_store)])
        self.index = np.concatenate(per_store).astype(np.int64)
        names = {s.schema.class_names for s in self.stores}
        ignores = {s.schema.ignore_index for s in self.stores}
        # labels are scored only when every store holds the same classes
        self.class_names = names.pop() if len(names) == 1 and len(ignores) == 1 else ()
        self.ignore_index = ignores.pop() if self.class_names else 255
        self.has_rgb = all(s.schema.store_rgb for s in self.stores)

    @property
    def n_tiles(self) -> int:
        return len(self.index)

    def table(self) -> dict[str, np.ndarray]:
        """The feed's tile table: ``store`` (position), ``index`` (in it), and its columns tile_id, slide_id, x, y."""
        cols = ("tile_id", "slide_id", "x", "y")
        parts = [s.table() for s in self.stores]
        out = {c: np.concatenate([p[c][self.index[self.store_of == k]] for k, p in enumerate(parts)]) for c in cols}
        return {"store": self.store_of, "index": self.index, **out}

    def read(self, rows: np.ndarray, labels: bool = False) -> Batch:
        tiles, labs = [], []
        for r in rows:
            fs, i = self.stores[self.store_of[r]], int(self.index[r])
            tiles.append(fs.read_tile(i, self.blocks, self.timesteps, extras=False).features)
            if labels and self.class_names:
                labs.append(fs.read_labels(i))
        # one resize per (timestep, block) for the whole batch: (B, C, h, w) -> (B, C, size)
        parts = [self._resized(np.stack([f[t][b] for f in tiles])) for t in self.timesteps for b in self.blocks]
        return Batch(np.asarray(rows), torch.cat(parts, 1).numpy(), np.stack(labs) if labs else None)

    def _resized(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
        if tuple(t.shape[-2:]) == self.size:
            return t
        smaller = t.shape[-2] * t.shape[-1] > self.size[0] * self.size[1]
        mode = {"mode": "area"} if smaller else {"mode": "bilinear", "align_corners": False}
        return F.interpolate(t, size=self.size, **mode)

    def batches(self, rows: np.ndarray, batch_tiles: int, labels: bool = False) -> Iterator[Batch]:
        for s in range(0, len(rows), batch_tiles):
            yield self.read(rows[s : s + batch_tiles], labels)

    def rgb(self, row: int) -> np.ndarray:
        """(T, T, 3) uint8 RGB of feed row ``row``."""
        return np.asarray(self.stores[self.store_of[row]].read_rgb(int(self.index[row]))).transpose(1, 2, 0)

    def provenance(self, store: int) -> dict:
        return self.stores[store].provenance


def pixels(features: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B*h*w, C), pixels of tile 0 first, each tile in raster order."""
    b, c, h, w = features.shape
    return features.transpose(0, 2, 3, 1).reshape(b * h * w, c)


class Standardiser:
    """Per-channel mean and standard deviation over every pixel given to :meth:`update`."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def update(self, x: np.ndarray) -> None:
        """``x``: (n, C) pixels."""
        n = len(x)
        if not n:
            return
        x = x.astype(np.float64)
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.n = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation; 1 for a constant channel (it then stays 0 after centring)."""
        std = np.sqrt(self.m2 / max(self.n, 1))
        return np.where(std > 1e-12, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)
