"""The feature store: the only code that knows the Zarr layout (see ``schema``)."""

from pathsegdiff.store.create import create_store, open_or_create, open_writer
from pathsegdiff.store.reader import FeatureStore, TileData, open_store
from pathsegdiff.store.schema import (
    SCHEMA_VERSION,
    BlockSpec,
    FeatureSpec,
    StoreSchema,
    TileBatch,
    TileRecord,
)
from pathsegdiff.store.writer import StoreWriter

__all__ = [
    "SCHEMA_VERSION", "BlockSpec", "FeatureSpec", "FeatureStore", "StoreSchema", "StoreWriter", "TileBatch",
    "TileData", "TileRecord", "create_store", "open_or_create", "open_store", "open_writer",
]
