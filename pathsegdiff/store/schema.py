"""The store contract: layout version, array names, dtypes, attributes, identity.

This module is the only place that names things on disk.  The writer, the
reader, ``verify`` and the README's format section all take their names from
here, so a change to the layout is a change to this file (and a version bump).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pathsegdiff.errors import ConfigError, SchemaError
from pathsegdiff.store.encodings.preset import DEFAULT_PRESET, parse_preset

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
# Optional cohort columns (added without a version bump: stores made before them read as the defaults).
COHORT_COLUMNS = {  # name -> (dtype, value for a store without the column)
    "patient": ("str", ""),
    "level": ("int32", 0),  # pyramid level the tile was read from
    "annotated": ("float32", float("nan")),  # fraction of the tile's pixels with a class label; NaN: no annotations
}
STATUS = "tiles/status"
FAIL_REASON = "tiles/fail_reason"
TABLE_CHUNK = 4096  # tile-table and status chunk length: small arrays, few objects
FEATURES_GROUP = "features"
LABELS, INSTANCES, RGB, SSL, LATENT = "labels", "instances", "rgb", "ssl", "latent"
PCA_GROUP = "pca"
PCA_PARTS = ("mean", "components", "explained")

# Every top-level entry of a store directory: anything else in it is not the store's, and replacing the store
# (--overwrite) refuses rather than delete it.
TOP_LEVEL = frozenset({"zarr.json", LOCK_NAME, TILES_GROUP, FEATURES_GROUP, LABELS, INSTANCES, RGB, SSL, LATENT,
                       PCA_GROUP, "MANIFEST.sha256"})


def foreign_entries(names) -> list[str]:
    """The names among a store directory's top-level entries that no store writes."""
    return sorted(n for n in names if n not in TOP_LEVEL and not n.startswith(LOCK_NAME))


SPLITS = ("train", "val", "test", "")
CODECS = ("none", "lz4", "zstd", "bitround7-zstd")
DEFAULT_CODEC = "none"
STORAGE_DTYPES = ("float16", "float32", "bfloat16-as-float32")


def feature_path(timestep: int, block: str) -> str:
    """Array path of one block at one timestep: ``features/t50/up1``."""
    return f"{FEATURES_GROUP}/t{int(timestep)}/{block}"


def scale_offset_path(timestep: int, block: str) -> str:
    """int8 presets: the (tile, 2, K) float32 scale (row 0) and offset (row 1) of each stored channel."""
    return f"{feature_path(timestep, block)}.scale_offset"



def pca_path(timestep: int, block: str, part: str) -> str:
    """PCA presets: ``pca/t50/up1/components`` (K, C), ``mean`` (C,), ``explained`` (K,), float32."""
    return f"{PCA_GROUP}/t{int(timestep)}/{block}/{part}"


@dataclass(frozen=True)
class BlockSpec:
    """One captured UNet block: its name and per-tile shape (C, h, w)."""

    name: str
    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that changes the feature values; its hash is the store identity."""

    model_id: str
    weights_sha256: str
    blocks: tuple[BlockSpec, ...]
    timesteps: tuple[int, ...]
    noise_seed: int = 0
    draws: int = 1
    conditioning: str = "null"
    tile_size: int = 256
    dtype: str = "float16"
    codec: str = DEFAULT_CODEC
    model_config_sha256: str = ""
    # The model's compute dtype: bf16 features differ from fp32 ones by 2-3 % (bench/numerics.py),
    # a hundred times the float16 storage error, so a resume in another dtype must not mix them.
    compute_dtype: str = "fp32"
    # The compact encoding (store/encodings/) and, for PCA presets, the hash of the stored bases;
    # both leave the identity when at their defaults, so stores made before them keep theirs.
    encoding: str = DEFAULT_PRESET
    basis_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.blocks:
            raise SchemaError("a feature spec needs at least one block")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate block names: {names}")
        if not self.timesteps or len(set(self.timesteps)) != len(self.timesteps):
            raise SchemaError(f"timesteps must be a non-empty list without repeats, got {list(self.timesteps)}")
        if any(t < 0 for t in self.timesteps):
            raise SchemaError(f"timesteps must be >= 0, got {list(self.timesteps)}")
        if self.draws < 1:
            raise SchemaError(f"draws must be >= 1, got {self.draws}")
        if self.tile_size < 8:
            raise SchemaError(f"tile_size must be >= 8, got {self.tile_size}")
        parse_codec(self.codec)
        if self.dtype not in ("float16", "float32"):
            raise SchemaError(f"storage dtype must be float16 or float32, got {self.dtype!r}")
        if self.compute_dtype not in ("fp32", "bf16", "fp16"):
            raise SchemaError(f"compute dtype must be fp32, bf16 or fp16, got {self.compute_dtype!r}")
        try:
            enc = parse_preset(self.encoding)
        except ConfigError as e:
            raise SchemaError(str(e)) from None
        object.__setattr__(self, "encoding", enc.name)  # one spelling per preset, so one identity
        if self.basis_sha256 and not enc.uses_pca:
            raise SchemaError(f"encoding {enc.name} has no PCA basis, but basis_sha256 is set")
        if enc.int8 and self.codec.startswith("bitround"):
            raise SchemaError(f"codec {self.codec} rounds float bits; it does not apply to {enc.name} values")

    def block(self, name: str) -> BlockSpec:
        for b in self.blocks:
            if b.name == name:
                return b
        raise SchemaError(f"no block {name!r}; the store has {[b.name for b in self.blocks]}")

    def identity_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [[b.name, b.channels, b.height, b.width] for b in self.blocks]
        d["timesteps"] = list(self.timesteps)
        # A lossless codec does not change values; only a lossy one is identity.
        d["codec"] = self.codec if self.codec.startswith("bitround") else "lossless"
        for key, default in (("encoding", DEFAULT_PRESET), ("basis_sha256", "")):
            if d[key] == default:
                del d[key]
        return d

    def identity(self) -> str:
        return identity_hash(self.identity_fields())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [asdict(b) for b in self.blocks]
        d["timesteps"] = list(self.timesteps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        d = dict(d)
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise SchemaError(f"unknown feature-spec fields {sorted(unknown)}")
        d["blocks"] = tuple(BlockSpec(**b) for b in d["blocks"])
        d["timesteps"] = tuple(int(t) for t in d["timesteps"])
        return cls(**d)


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


@dataclass(frozen=True)
class TileRecord:
    """One row of the tile table."""

    tile_id: str
    slide_id: str = ""
    x: int = 0
    y: int = 0
    mpp: float = float("nan")
    split: str = ""
    patient: str = ""
    level: int = 0
    annotated: float = float("nan")

    def __post_init__(self) -> None:
        if not self.tile_id:
            raise SchemaError("tile_id must be a non-empty string")
        if self.split not in SPLITS:
            raise SchemaError(f"tile {self.tile_id}: split must be one of {SPLITS[:3]} or empty, got {self.split!r}")


@dataclass
class TileBatch:
    """Arrays for B tiles, in the order of the indices they are written to: ``features[t][block]`` (B, C, h, w)
    float; labels (B, H, W) uint8; instances (B, H, W) int32; rgb (B, 3, H, W) uint8; ssl (B, D) float32;
    latent (B, c, h, w) float32."""

    features: dict[int, dict[str, Any]]
    labels: Any = None
    instances: Any = None
    rgb: Any = None
    ssl: Any = None
    latent: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_codec(name: str) -> str:
    if name not in CODECS:
        raise SchemaError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    return name


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def identity_hash(identity_fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity_fields).encode()).hexdigest()[:16]


def identity_diff(a: FeatureSpec, b: FeatureSpec) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two specs: name -> (a, b)."""
    fa, fb = a.identity_fields(), b.identity_fields()
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
