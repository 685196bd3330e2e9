"""What a run needs to know of its model before the store exists: the featurizer, the store's schema, the facts.

Both runners describe the model the same way (:func:`describe_model`): the
in-process runner on its own featurizer, the dask runner on the first worker
that has loaded the model, so the coordinator never needs the model except to
calibrate a PCA preset on a new store.
"""

from __future__ import annotations

from pathsegdiff.errors import ConfigError
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.config import ExtractConfig
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema
from pathsegdiff.tiles.sources import TileSource


def load_featurizer(cfg: ExtractConfig, backbone=None) -> Featurizer:
    """The run's featurizer; ``backbone``: an already-built model instead of loading ``cfg.model``."""
    return Featurizer.load(cfg.model, cfg.conditioning, cfg.features, cfg.device, cfg.dtype, backbone=backbone,
                           compile=cfg.compile)


def model_facts(featurizer: Featurizer) -> dict:
    """What the provenance records of the model, and a warning for seeded weights."""
    b = featurizer.backbone
    return {"model_id": b.model_id, "weights_sha256": b.weights_sha256, "backbone": b.describe(),
            "warning": featurizer.warning(), "notes": list(b.notes)}


def build_schema(source: TileSource, featurizer: Featurizer, cfg: ExtractConfig) -> StoreSchema:
    backbone, f, cond = featurizer.backbone, featurizer.cfg, featurizer.conditioner
    shapes = featurizer.block_shapes(source.tile_size)
    spec = FeatureSpec(
        model_id=backbone.model_id, weights_sha256=backbone.weights_sha256,
        model_config_sha256=backbone.config_sha256,
        blocks=tuple(BlockSpec(b, *shapes[b]) for b in f.blocks), timesteps=f.timesteps, noise_seed=f.seed,
        draws=f.draws, conditioning=cond.name, tile_size=source.tile_size, codec=cfg.codec, compute_dtype=cfg.dtype,
        encoding=cfg.compact,  # a PCA preset's basis_sha256 is set once its bases exist (calibrate.pca_bases)
    )
    latent = None
    if cfg.store_latent:
        if not backbone.latent_channels:
            raise ConfigError(f"model {backbone.model_id} has no latent to store; drop --store-latent")
        s = source.tile_size // backbone.downsample
        latent = (backbone.latent_channels, s, s)
    return StoreSchema(spec, n_tiles=len(source), class_names=tuple(source.class_names), ssl_dim=cond.dim,
                       latent_shape=latent, store_instances=bool(getattr(source, "has_instances", False)),
                       shard_tiles=cfg.shard_tiles)


def describe_model(source: TileSource, featurizer: Featurizer, cfg: ExtractConfig) -> dict:
    """The schema of ``source``'s store, the backbone's filled-in feature options and the model's facts."""
    return {"schema": build_schema(source, featurizer, cfg), "features": featurizer.cfg, **model_facts(featurizer)}
