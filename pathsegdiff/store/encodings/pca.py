"""A channel projection per block and timestep: PCA fitted on a calibration sample.

Each pixel of a (C, h, w) feature map is a C-vector; the basis keeps the K
directions of largest variance over a calibration sample of pixels, so a map
is stored as K coefficient maps (K, h, w) and read back as

    x ~= components.T @ coefficients + mean        (per pixel; components (K, C), mean (C,))

The sample is seeded (which tiles, which pixels) and the fit runs in float64
with each component's sign fixed (its largest entry positive), so the same
sample gives the same basis.  A tile is projected on its own, with the same
array shapes every time, so its coefficients do not depend on the batch it
came in: a resumed run writes the bytes an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pathsegdiff.errors import SchemaError
from pathsegdiff.store.encodings.preset import Calibration


@dataclass(frozen=True, eq=False)
class PCABasis:
    """``mean`` (C,) and orthonormal ``components`` (K, C), float32; ``explained`` (K,) the share of the
    calibration variance each component carries."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def __post_init__(self) -> None:
        k, c = np.shape(self.components)
        if np.shape(self.mean) != (c,) or np.shape(self.explained) != (k,) or not 1 <= k <= c:
            raise SchemaError(f"PCA basis shapes do not fit: mean {np.shape(self.mean)}, components "
                              f"{np.shape(self.components)}, explained {np.shape(self.explained)}")
        for name in ("mean", "components", "explained"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float32))

    @property
    def channels(self) -> int:
        return int(self.components.shape[1])

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def sha256(self) -> str:
        """Hash of the basis as stored (float32 mean and components): the store's identity includes it."""
        h = hashlib.sha256()
        for a in (self.mean, self.components):
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def project(self, x: np.ndarray) -> np.ndarray:
        """(B, C, *spatial) -> float32 coefficients (B, K, *spatial), one tile at a time."""
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise SchemaError(f"features of shape {x.shape} do not fit a PCA basis of {self.channels} channels")
        out = np.empty((x.shape[0], self.k, *x.shape[2:]), dtype=np.float32)
        for b in range(x.shape[0]):
            tile = x[b].reshape(self.channels, -1).astype(np.float32) - self.mean[:, None]
            out[b] = (self.components @ tile).reshape(self.k, *x.shape[2:])
        return out

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """(B, K, *spatial) coefficients -> float32 features (B, C, *spatial), one tile at a time."""
        c = np.asarray(coefficients)
        if c.ndim < 2 or c.shape[1] != self.k:
            raise SchemaError(f"coefficients of shape {c.shape} do not fit a PCA basis of {self.k} components")
        out = np.empty((c.shape[0], self.channels, *c.shape[2:]), dtype=np.float32)
        basis_t = np.ascontiguousarray(self.components.T)
        for b in range(c.shape[0]):
            tile = c[b].reshape(self.k, -1).astype(np.float32)
            out[b] = (basis_t @ tile + self.mean[:, None]).reshape(self.channels, *c.shape[2:])
        return out


def sample_pixels(samples: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Up to ``calibration.pixels`` pixel vectors (rows, C) of ``samples`` (N, C, *spatial), seeded."""
    x = np.asarray(samples)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    total = n * flat.shape[2]
    rng = np.random.default_rng([calibration.seed, c, flat.shape[2]])
    pick = np.sort(rng.choice(total, size=min(calibration.pixels, total), replace=False))
    tile, pixel = np.divmod(pick, flat.shape[2])
    return flat[tile, :, pixel].astype(np.float64)  # (rows, C)


def fit_pca(samples: np.ndarray, k: int, calibration: Calibration = Calibration()) -> PCABasis:
    """Fit K components (at most C) on the pixels of ``samples`` (N, C, *spatial), seeded by ``calibration``."""
    x = np.asarray(samples)
    if x.ndim < 2 or x.shape[0] < 1:
        raise SchemaError(f"a PCA fit needs (tiles, channels, ...) samples, got shape {x.shape}")
    rows = sample_pixels(x, calibration)
    c = rows.shape[1]
    k = min(int(k), c)
    if not np.isfinite(rows).all():
        raise SchemaError("the calibration sample holds inf or NaN")
    if rows.shape[0] < 2:
        raise SchemaError(f"a PCA fit needs at least 2 calibration pixels, got {rows.shape[0]}")
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = centred.T @ centred / (rows.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:k]
    comps = vectors[:, order].T  # (K, C)
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(np.clip(values, 0, None).sum())
    explained = np.clip(values[order], 0, None) / total if total > 0 else np.zeros(k)
    return PCABasis(mean, comps, explained)


def calibration_tiles(slide_ids: Sequence[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of up to ``n`` tiles spread over slides: the slides take turns, in the order they
    first appear, each giving its tiles in a seeded random order."""
    slides: dict[str, list[int]] = {}
    for i, s in enumerate(slide_ids):
        slides.setdefault(str(s), []).append(i)
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(tiles)) for tiles in slides.values()]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(int(q.pop(0)))
    return np.sort(np.asarray(picked, dtype=np.int64))


BlockKey = tuple[int, str]  # (timestep, block name)


def fit_bases(samples: Mapping[BlockKey, np.ndarray], k: int,
              calibration: Calibration = Calibration()) -> dict[BlockKey, PCABasis]:
    """One basis per block and timestep, each fitted on that block's calibration features (N, C, h, w)."""
    return {key: fit_pca(x, k, calibration) for key, x in sorted(samples.items())}


def bases_sha256(bases: Mapping[BlockKey, PCABasis]) -> str:
    """One hash over every basis of a store (the identity field ``basis_sha256``)."""
    h = hashlib.sha256()
    for (t, b), basis in sorted(bases.items()):
        h.update(f"t{int(t)}/{b}:{basis.sha256()};".encode())
    return h.hexdigest()
