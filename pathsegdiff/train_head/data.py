"""Streaming tiles from a store into torch: a Dataset and its DataLoader.

Each item reads one tile's selected blocks and timesteps (float16, as
stored), its labels and optionally its RGB and instances; nothing else is
read and nothing is cached, so memory is bounded by batch size times
prefetch depth, never by the store size.  The dataset keeps only the store's
location and opens it lazily in each process (and again after a fork), so it
works in DataLoader workers under fork and spawn.  Several stores (a
``store_set.StoreSet``) are read as one: tile ``i`` of the set is tile
``i - offsets[k]`` of store ``k``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathsegdiff.store import FeatureStore, open_store
from pathsegdiff.train_head.store_set import as_wheres


def dihedral(a: np.ndarray, rot: int, flip: bool) -> np.ndarray:
    """Rotate by ``rot`` quarter turns, then mirror left-right, on the last two axes.

    On square tiles this commutes with bilinear upsampling, so applying it to
    low-resolution features and to full-resolution labels keeps them aligned.
    """
    a = np.rot90(a, rot, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)


class TileDataset(Dataset):
    """Tiles ``indices`` of the store at ``where`` (or of several stores, numbered across them): features,
    labels and optional extras.

    ``coefficients``: a PCA store's coefficients stand in for the features (``coefficients.py`` says when a
    head may take them).
    """

    def __init__(
        self,
        where: str | Sequence[str],
        indices: Sequence[int],
        blocks: Sequence[str],
        timesteps: Sequence[int],
        augment: bool = False,
        seed: int = 0,
        with_rgb: bool = False,
        with_instances: bool = False,
        coefficients: bool = False,
    ):
        self.wheres = as_wheres(where)
        self.where = self.wheres[0]
        # tile numbers where each store starts; read once here, so workers need not open every store
        self.offsets = np.cumsum([0] + [open_store(w).n_tiles for w in self.wheres[:-1]]) if len(self.wheres) > 1 \
            else np.zeros(1, np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.blocks = tuple(blocks)
        self.timesteps = tuple(int(t) for t in timesteps)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.with_rgb = with_rgb
        self.with_instances = with_instances
        self.coefficients = coefficients  # a PCA store's coefficients (K, h, w), not decoded features
        self._stores: dict[int, FeatureStore] = {}
        self._pid = -1

    def set_epoch(self, epoch: int) -> None:
        """Augmentations depend on (seed, epoch, tile), not on worker or order."""
        self.epoch = epoch

    def _open(self, k: int) -> FeatureStore:
        if self._pid != os.getpid():
            self._stores, self._pid = {}, os.getpid()
        if k not in self._stores:
            self._stores[k] = open_store(self.wheres[k])
        return self._stores[k]

    @property
    def store(self) -> FeatureStore:
        """The (first) store."""
        return self._open(0)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stores": {}, "_pid": -1}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        i = int(self.indices[item])
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        s, local = self._open(k), i - int(self.offsets[k])
        read = s.read_coefficients if self.coefficients else s.read_features
        feats = {t: {b: read(local, t, b) for b in self.blocks} for t in self.timesteps}
        labels = s.read_labels(local)
        extras = {}
        if self.with_rgb and s.schema.store_rgb:
            extras["rgb"] = s.read_rgb(local)
        if self.with_instances and s.schema.store_instances:
            extras["instances"] = s.read_instances(local)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            rot, flip = int(rng.integers(4)), bool(rng.integers(2))
            feats = {t: {b: dihedral(x, rot, flip) for b, x in d.items()} for t, d in feats.items()}
            labels = dihedral(labels, rot, flip)
            extras = {k: dihedral(v, rot, flip) for k, v in extras.items()}
        return {
            "index": i,
            "features": {t: {b: torch.from_numpy(x) for b, x in d.items()} for t, d in feats.items()},
            "labels": torch.from_numpy(labels.astype(np.int64)),
            **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in extras.items()},
        }


def _worker_init(_: int) -> None:
    # Workers only read and decode; one thread each keeps the cores for training.
    torch.set_num_threads(1)


def make_loader(
    dataset: TileDataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0, prefetch: int = 2
) -> DataLoader:
    """Batches of ``dataset``; the shuffle order is fixed by ``seed`` and the epoch."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=prefetch if workers else None,
        persistent_workers=False,
        drop_last=False,
    )
