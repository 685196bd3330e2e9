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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathsegdiff.store import FeatureStore, open_store
from pathsegdiff.train_head.heads.protocol import HeadInputs, HeadSpec
from pathsegdiff.train_head.store_set import as_wheres, open_stores


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

    def with_options(self, **changes: Any) -> TileDataset:
        """The same tiles and features with other options (augment, seed, with_rgb, ...)."""
        keys = ("indices", "blocks", "timesteps", "augment", "seed", "with_rgb", "with_instances", "coefficients")
        return TileDataset(self.wheres, **{**{k: getattr(self, k) for k in keys}, **changes})

    @property
    def spec(self) -> HeadSpec:
        """What a head on these tiles receives: the blocks' stored shapes, timesteps, classes, tile size."""
        sch = self.store.schema
        if self.coefficients:
            raise ValueError("a dataset of PCA coefficients has no feature spec; see coefficients.py")
        return HeadSpec(tuple(sch.features.block(b) for b in self.blocks), self.timesteps, len(sch.class_names),
                        sch.tile_size)

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


def to_device(features: Mapping, device: torch.device) -> dict[int, dict[str, torch.Tensor]]:
    """Move a batch's float16 features to the device as float32."""
    return {int(t): {b: x.to(device, non_blocking=True).float() for b, x in d.items()} for t, d in features.items()}


def batch_inputs(batch: Mapping[str, Any], device: torch.device, size: int, rgb: bool = False) -> HeadInputs:
    """A collated batch as a head's input: features as float32 on ``device``, RGB in [0, 1] when ``rgb``."""
    image = batch["rgb"].to(device, non_blocking=True).float() / 255 if rgb and "rgb" in batch else None
    return HeadInputs(to_device(batch["features"], device), (size, size), image)


def pixel_counts(where: str | Sequence[str], indices: Sequence[int], n_classes: int, ignore_index: int) -> np.ndarray:
    """Labelled pixels of each class (n_classes,) over tiles ``indices`` (numbered across the stores)."""
    stores = open_stores(where)
    counts = np.zeros(n_classes, np.int64)
    for i in np.asarray(indices, np.int64):
        k, local = stores.locate(int(i))
        labels = stores.stores[k].read_labels(local).ravel()
        counts += np.bincount(labels[labels != ignore_index], minlength=n_classes)[:n_classes]
    return counts
