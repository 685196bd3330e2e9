"""What a store is written from: one tile-table row (``TileRecord``) and the arrays of a few tiles (``TileBatch``).

Part of the store's contract: ``schema`` re-exports both (the contract is
read from there) and states where each field goes on disk.  A tile's ``origin`` says whether it
was cut from real tissue or generated (synthetic tiles with known masks,
added to training by semi-supervised methods): a synthetic tile is a
training tile, so its split is ``train`` or empty, never ``val`` or ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pathsegdiff.errors import SchemaError

SPLITS = ("train", "val", "test", "")
ORIGINS = ("real", "synthetic")  # a store made before the origin column reads as real
SYNTHETIC_SPLITS = ("train", "")  # synthetic tiles never validate or test a head


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
    origin: str = "real"

    def __post_init__(self) -> None:
        if not self.tile_id:
            raise SchemaError("tile_id must be a non-empty string")
        if self.split not in SPLITS:
            raise SchemaError(f"tile {self.tile_id}: split must be one of {SPLITS[:3]} or empty, got {self.split!r}")
        if self.origin not in ORIGINS:
            raise SchemaError(f"tile {self.tile_id}: origin must be real or synthetic, got {self.origin!r}")
        if self.origin == "synthetic" and self.split not in SYNTHETIC_SPLITS:
            raise SchemaError(f"tile {self.tile_id}: a synthetic tile is a training tile; its split must be train "
                              f"or empty, not {self.split}")


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
