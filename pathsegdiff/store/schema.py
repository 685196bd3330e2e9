"""The store contract: layout version, array names, dtypes, attributes, identity.

This module is the only place that names things on disk.  :func:`store_arrays`
lists every array of a store (name, per-tile shape, dtype, dimension names,
codecs, chunking) once; create, the writer and its batch check, the reader,
``verify``, ``compact``, device-side encoding and the format doc all take
their arrays from it, so a change to the layout is a change to this file (and
a version bump).  What changes the feature values (``FeatureSpec`` and the
identity hash) is in ``identity.py``, and what a store is written from (a
tile-table row, ``TileRecord``, and ``TileBatch``) in ``records.py``; both
are re-exported here.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from pathsegdiff.errors import SchemaError
from pathsegdiff.store.encodings.preset import parse_preset
# Re-exported: the contract is read from here (``S.FeatureSpec``, ``S.parse_codec``, ...).
from pathsegdiff.store.identity import CODECS as CODECS
from pathsegdiff.store.identity import DEFAULT_CODEC as DEFAULT_CODEC
from pathsegdiff.store.identity import BlockSpec as BlockSpec
from pathsegdiff.store.identity import FeatureSpec as FeatureSpec
from pathsegdiff.store.identity import canonical_json as canonical_json
from pathsegdiff.store.identity import identity_diff as identity_diff
from pathsegdiff.store.identity import identity_hash as identity_hash
from pathsegdiff.store.identity import parse_codec as parse_codec
from pathsegdiff.store.records import ORIGINS as ORIGINS
from pathsegdiff.store.records import SPLITS as SPLITS
from pathsegdiff.store.records import TileBatch as TileBatch
from pathsegdiff.store.records import TileRecord as TileRecord

SCHEMA_VERSION = 1
ATTR_KEY = "pathsegdiff"  # root attribute holding everything below
LOCK_NAME = ".pathsegdiff.lock"

# Tile status codes (uint8).
STATUS_TODO = 0
STATUS_WRITTEN = 1
# 2 is reserved: it once meant "verified", which nothing ever set (`store verify` reports, it does not mark).
STATUS_FAILED = 3  # unreadable input, recorded with a reason; never holds data
STATUS_NAMES = {STATUS_TODO: "todo", STATUS_WRITTEN: "written", STATUS_FAILED: "failed"}

# Array paths inside the store.
TILES_GROUP = "tiles"
# name -> dtype ("str" is zarr's variable-length UTF-8 string)
TILE_COLUMNS = {"tile_id": "str", "slide_id": "str", "x": "int64", "y": "int64", "mpp": "float32", "split": "str"}
# Optional columns (added without a version bump: stores made before them read as the defaults).
COHORT_COLUMNS = {  # name -> (dtype, value for a store without the column)
    "patient": ("str", ""),
    "level": ("int32", 0),  # pyramid level the tile was read from
    "annotated": ("float32", float("nan")),  # fraction of the tile's pixels with a class label; NaN: no annotations
    "origin": ("str", "real"),  # ORIGINS: real, or synthetic (generated tiles with known masks; train only)
}
# The ``tiles`` group's attribute ``runs``: the tile table's slide, patient and split as runs of consecutive tiles,
# [slide_id, patient, split, start, stop, annotated sum, annotated count] (count: tiles whose annotated is not NaN),
# written with the rows, so ``store info`` answers without decoding a million strings.  Optional: absent from
# stores made before it, and None where a table has more than MAX_RUNS runs.
RUNS_ATTR = "runs"
MAX_RUNS = 100_000
STATUS = "tiles/status"
FAIL_REASON = "tiles/fail_reason"
TABLE_CHUNK = 4096  # tile-table and status chunk length: small arrays, few objects
FEATURES_GROUP = "features"
LABELS, INSTANCES, RGB, SSL, LATENT = "labels", "instances", "rgb", "ssl", "latent"
PCA_GROUP = "pca"
PCA_PARTS = ("mean", "components", "explained")

PARTIAL_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr LocalStore's temporary name of an object being written
# Every top-level entry of a store directory: with anything else in it, --overwrite refuses to delete it.
TOP_LEVEL = frozenset({"zarr.json", LOCK_NAME, TILES_GROUP, FEATURES_GROUP, LABELS, INSTANCES, RGB, SSL, LATENT,
                       PCA_GROUP, "MANIFEST.sha256"})


def foreign_entries(names) -> list[str]:
    """Top-level names no store writes (a killed write's ``.partial`` temporary is the store's own)."""
    return sorted(n for n in names if n not in TOP_LEVEL and not n.startswith(LOCK_NAME)
                  and not PARTIAL_WRITE.search(n))


def column_path(name: str) -> str:
    """Array path of a tile-table column: ``tiles/slide_id``."""
    return f"{TILES_GROUP}/{name}"


def feature_path(timestep: int, block: str) -> str:
    """Array path of one block at one timestep: ``features/t50/up1``."""
    return f"{FEATURES_GROUP}/t{int(timestep)}/{block}"


def scale_offset_path(timestep: int, block: str) -> str:
    """int8 presets: the (tile, 2, K) float32 scale (row 0) and offset (row 1) of each stored channel."""
    return f"{feature_path(timestep, block)}.scale_offset"


def pca_path(timestep: int, block: str, part: str) -> str:
    """PCA presets: ``pca/t50/up1/components`` (K, C), ``mean`` (C,), ``explained`` (K,), float32."""
    return f"{PCA_GROUP}/t{int(timestep)}/{block}/{part}"


TABLE_KINDS = ("column", "status", "fail_reason")  # the tile table: chunks of TABLE_CHUNK tiles
DATA_KINDS = ("features", "scale_offset", "labels", "instances", "rgb", "ssl", "latent")  # one chunk per tile
EXTRA_KINDS = ("labels", "instances", "rgb", "ssl", "latent")  # stored beside the features; TileBatch fields


@dataclass(frozen=True)
class ArraySpec:
    """One array of a store, as ``create`` makes it and everything else reads it.

    ``shape`` leaves out the tile axis of a per-tile array (every kind but ``basis``, whose shape is whole).
    ``dtype`` is a numpy name, or ``"str"`` (zarr's variable-length UTF-8).  ``codecs``: a feature codec
    (``CODECS``), or ``"checked"`` (crc32c) or ``"checked-zstd"`` (zstd, then crc32c).  ``chunk_tiles``:
    tiles per chunk along the tile axis (1 for tile data); ``shard_tiles``: tiles per shard, or None.
    """

    name: str
    kind: str  # TABLE_KINDS, DATA_KINDS or "basis"
    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    codecs: str
    chunk_tiles: int = 1
    shard_tiles: int | None = None
    optional: bool = False  # stores made before it lack it (the cohort columns), and read as its fill value
    timestep: int | None = None  # features, scale_offset, basis: which block at which timestep
    block: str | None = None

    @property
    def per_tile(self) -> bool:
        return self.kind != "basis"

    @property
    def fill_value(self) -> Any:
        """NaN for floats (written values are finite, so NaN read back means a missing chunk), '' or 0 else."""
        return "" if self.dtype == "str" else (float("nan") if self.dtype.startswith("float") else 0)

    @property
    def every_chunk(self) -> bool:
        """The writer writes every chunk, fill values included, so a missing one is damage (the tile table)."""
        return self.kind in ("column", "status") and not self.optional

    @property
    def key_separator(self) -> str:
        """Chunk keys ``c.17.0.0`` (one file per tile chunk, no directory per tile) for tile data, else ``c/0``."""
        return "." if self.kind in DATA_KINDS else "/"


def store_arrays(sch: StoreSchema) -> list[ArraySpec]:
    """Every array of a store of schema ``sch``: the tile table, the features (and a compact encoding's
    scale/offset and PCA bases), and what is stored beside them."""
    fixed = sch.n_tiles is not None
    column_chunk = min(TABLE_CHUNK, max(sch.n_tiles, 1)) if fixed else TABLE_CHUNK
    out = [ArraySpec(column_path(c), "column", (), dtype, ("tile",), "checked-zstd", column_chunk)
           for c, dtype in TILE_COLUMNS.items()]
    out += [ArraySpec(column_path(c), "column", (), dtype, ("tile",), "checked-zstd", column_chunk, optional=True)
            for c, (dtype, _) in COHORT_COLUMNS.items()]
    out += [ArraySpec(STATUS, "status", (), "uint8", ("tile",), "checked", TABLE_CHUNK),
            ArraySpec(FAIL_REASON, "fail_reason", (), "str", ("tile",), "checked-zstd", TABLE_CHUNK)]
    spec, s = sch.features, sch.tile_size
    enc = parse_preset(spec.encoding)  # a compact store holds K int8 or float16 channels (store/encodings/)
    shards = sch.shard_tiles if sch.shard_tiles > 1 else None
    value_dtype = spec.dtype if enc.is_default else enc.value_dtype
    for t in spec.timesteps:
        for b in spec.blocks:
            k, ch = enc.stored_channels(b.channels), f"{'k' if enc.uses_pca else 'c'}_{b.name}"
            out.append(ArraySpec(feature_path(t, b.name), "features", (k, b.height, b.width), value_dtype,
                                 ("tile", ch, f"h_{b.name}", f"w_{b.name}"), spec.codec, 1, shards, False, t, b.name))
            if enc.int8:
                out.append(ArraySpec(scale_offset_path(t, b.name), "scale_offset", (2, k), "float32",
                                     ("tile", "scale_offset", ch), "checked", 1, shards, False, t, b.name))
            if enc.uses_pca:
                c, kk = f"c_{b.name}", f"k_{b.name}"
                for part, shape, dims in (("mean", (b.channels,), (c,)), ("components", (k, b.channels), (kk, c)),
                                          ("explained", (k,), (kk,))):
                    out.append(ArraySpec(pca_path(t, b.name, part), "basis", shape, "float32", dims, "checked", 0,
                                         None, False, t, b.name))
    extras = [(LABELS, sch.has_labels, (s, s), "uint8", ("row", "col"), "checked-zstd"),
              (INSTANCES, sch.store_instances, (s, s), "int32", ("row", "col"), "checked-zstd"),
              (RGB, sch.store_rgb, (3, s, s), "uint8", ("band", "row", "col"), "checked-zstd"),
              (SSL, sch.ssl_dim, (sch.ssl_dim,), "float32", ("ssl_dim",), "checked"),
              (LATENT, sch.latent_shape, tuple(sch.latent_shape or ()), "float32",
               ("c_latent", "h_latent", "w_latent"), "checked")]
    out += [ArraySpec(name, name, shape, dtype, ("tile", *dims), codecs, 1, shards)
            for name, stored, shape, dtype, dims, codecs in extras if stored]
    return out


def data_arrays(sch: StoreSchema) -> list[ArraySpec]:
    """The arrays that hold a tile's data, one chunk (or shard) per tile: what a written tile must have."""
    return [a for a in store_arrays(sch) if a.kind in DATA_KINDS]


@dataclass(frozen=True)
class StoreSchema:
    """The declared shape of a store: features plus what is stored beside them."""

    features: FeatureSpec
    n_tiles: int | None = None  # None: growable, tiles appended as they come
    class_names: tuple[str, ...] = ()  # empty: no labels stored
    ignore_index: int = 255
    ssl_dim: int = 0  # 0: no SSL embedding stored
    latent_shape: tuple[int, int, int] | None = None
    store_rgb: bool = True
    store_instances: bool = False
    shard_tiles: int = 1  # >1: sharded arrays, one shard per writer-owned range

    def __post_init__(self) -> None:
        if self.n_tiles is not None and self.n_tiles < 0:
            raise SchemaError(f"n_tiles must be >= 0, got {self.n_tiles}")
        if not 0 <= self.ignore_index <= 255:
            raise SchemaError(f"ignore_index must fit uint8, got {self.ignore_index}")
        if len(self.class_names) > 255 or (self.class_names and self.ignore_index < len(self.class_names)):
            raise SchemaError(
                f"ignore_index {self.ignore_index} collides with class ids 0..{len(self.class_names) - 1}"
            )
        if self.store_instances and not self.class_names:
            raise SchemaError("instances are stored only with labels (declare class_names)")
        if self.shard_tiles < 1:
            raise SchemaError(f"shard_tiles must be >= 1, got {self.shard_tiles}")

    @property
    def has_labels(self) -> bool:
        return bool(self.class_names)

    @property
    def tile_size(self) -> int:
        return self.features.tile_size

    @property
    def identity(self) -> str:
        return self.features.identity()

    def feature_bytes_per_tile(self) -> int:
        """Uncompressed bytes of one tile's features in the store's encoding (int8 scale/offset included)."""
        spec, enc = self.features, parse_preset(self.features.encoding)
        item = 2 if spec.dtype == "float16" else 4
        per_t = sum(math.prod(b.shape) * item if enc.is_default else enc.stored_bytes(*b.shape) for b in spec.blocks)
        return per_t * len(spec.timesteps)

    def bytes_per_tile(self) -> int:
        """Uncompressed bytes one tile occupies (features + extras)."""
        s2 = self.tile_size**2
        extras = s2 * (self.has_labels + 4 * self.store_instances + 3 * self.store_rgb) + 4 * self.ssl_dim
        return self.feature_bytes_per_tile() + extras + (4 * math.prod(self.latent_shape) if self.latent_shape else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        d["class_names"] = list(self.class_names)
        d["latent_shape"] = list(self.latent_shape) if self.latent_shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreSchema:
        d = dict(d)
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise SchemaError(f"unknown schema fields {sorted(unknown)}")
        d["features"] = FeatureSpec.from_dict(d["features"])
        d["class_names"] = tuple(d.get("class_names", ()))
        if d.get("latent_shape"):
            d["latent_shape"] = tuple(d["latent_shape"])
        return cls(**d)
