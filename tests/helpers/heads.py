"""Trained-head directories for the predict and fault tests: seeded random weights, real checkpoint files."""

from __future__ import annotations

from pathlib import Path

import torch

from pathsegdiff.store import BlockSpec, FeatureSpec, open_store
from pathsegdiff.train_head.checkpoint import HeadMeta, build_head, save_head
from pathsegdiff.train_head.heads import HeadConfig

CLASSES = ("background", "nuclei", "stroma")


def tiny_model_head(run_dir: Path, tile: int = 128, weights_sha256: str | None = None) -> Path:
    """An FCN head with seeded random weights, recorded as trained on a store of the built-in tiny model (or, with
    ``weights_sha256``, of another model of its shapes)."""
    from pathsegdiff.extract.featurize import Featurizer

    featurizer = Featurizer.load("tiny")
    ldm, fcfg = featurizer.backbone, featurizer.cfg
    shapes = featurizer.block_shapes(tile)
    blocks = tuple(BlockSpec(b, *shapes[b]) for b in fcfg.blocks)
    spec = FeatureSpec(ldm.model_id, weights_sha256 or ldm.weights_sha256, blocks, fcfg.timesteps, tile_size=tile)
    torch.manual_seed(0)
    config = HeadConfig("fcn", blocks, fcfg.timesteps, len(CLASSES), tile)
    save_head(run_dir, build_head(config), HeadMeta(config, CLASSES, 255, spec.identity(), spec.identity_fields()))
    return run_dir


def store_head(run_dir: Path, store: Path) -> Path:
    """An FCN head recorded as trained on ``store`` (so evaluate accepts that store)."""
    fs = open_store(store)
    sch = fs.schema
    torch.manual_seed(0)
    config = HeadConfig("fcn", sch.features.blocks, sch.features.timesteps, len(sch.class_names), sch.tile_size,
                        proj_channels=4, hidden_channels=8, conv_layers=1)
    meta = HeadMeta(config, tuple(sch.class_names), sch.ignore_index, fs.identity, dict(fs.meta["identity_fields"]))
    save_head(run_dir, build_head(config), meta)
    return run_dir
