"""The feature store: the only code that knows the Zarr layout (see ``schema``).

Grouped by role: the contract (``schema``, ``identity``, ``encodings/``), the
backend (``backend/``: where a store lives and how its bytes move), the core
(create, write, read, grow, views), and one module per ``store`` command
(``commands/``).  This package hands on the public names.
"""

from pathsegdiff.store.commands.compact import compact_store
from pathsegdiff.store.commands.copy import check_manifest, copy_store
from pathsegdiff.store.commands.info import store_info
from pathsegdiff.store.commands.ls import list_tiles
from pathsegdiff.store.commands.pack import pack_store
from pathsegdiff.store.commands.verify import VerifyReport, verify_store
from pathsegdiff.store.create import create_store, open_or_create, open_writer
from pathsegdiff.store.reader import FeatureStore, TileData, open_store
from pathsegdiff.store.schema import (
    SCHEMA_VERSION,
    ArraySpec,
    BlockSpec,
    FeatureSpec,
    StoreSchema,
    TileBatch,
    TileRecord,
    store_arrays,
)
from pathsegdiff.store.writer import StoreWriter

__all__ = [
    "SCHEMA_VERSION", "ArraySpec", "BlockSpec", "FeatureSpec", "FeatureStore", "StoreSchema", "StoreWriter",
    "TileBatch", "TileData", "TileRecord", "VerifyReport", "check_manifest", "compact_store", "copy_store",
    "create_store", "list_tiles", "open_or_create", "open_store", "open_writer", "pack_store", "store_arrays",
    "store_info", "verify_store",
]
