"""What changes the feature values: the blocks, the timesteps, the model, the codec and encoding, and the
identity hash over them (``FeatureSpec.identity``).

Appending to a store whose identity differs is refused, and a head checkpoint
records the identity of the store it was trained on.  ``schema`` re-exports
every name here: the store's contract is read from there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from pathsegdiff.errors import ConfigError, SchemaError
from pathsegdiff.store.encodings.preset import DEFAULT_PRESET, parse_preset

CODECS = ("none", "lz4", "zstd", "bitround7-zstd")
DEFAULT_CODEC = "none"


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
