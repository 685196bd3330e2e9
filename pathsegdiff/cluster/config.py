"""What ``cluster`` is asked to do: one frozen config, validated where it is built, recorded in ``summary.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from pathsegdiff.errors import ConfigError

METHODS = ("kmeans", "nmf")
MAX_K = 254  # maps are uint8 and 255 marks pixels no tile covers (predict's UNANALYSED)


def parse_method(name: str) -> str:
    if name not in METHODS:
        raise ConfigError(f"--method {name!r}: choose {' or '.join(METHODS)}")
    return name


@dataclass(frozen=True)
class ClusterConfig:
    """``k`` clusters (k-means) or concepts (NMF) over the stored features of every written tile.

    ``blocks``/``timesteps``: None takes every one the store holds (as ``train``).
    ``size``: map side in pixels per tile; None takes the finest selected block's.
    ``fit_pixels``: pixels drawn per tile for fitting (0: all); every pixel is assigned afterwards.
    ``batch_tiles``: tiles per ``partial_fit`` step; ``passes``: passes of fitting over the tiles.
    """

    k: int = 3
    method: str = "kmeans"
    blocks: tuple[str, ...] | None = None
    timesteps: tuple[int, ...] | None = None
    size: int | None = None
    seed: int = 0
    fit_pixels: int = 1024
    batch_tiles: int = 8
    passes: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.k <= MAX_K:
            raise ConfigError(f"-k {self.k}: a map needs 2 to {MAX_K} clusters")
        parse_method(self.method)
        if self.size is not None and self.size < 1:
            raise ConfigError(f"--size {self.size}: give a map side of at least 1 pixel")
        for name in ("batch_tiles", "passes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.fit_pixels < 0:
            raise ConfigError(f"--fit-pixels {self.fit_pixels}: must be 0 (all) or more")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        d["timesteps"] = list(self.timesteps) if self.timesteps is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterConfig:
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise ConfigError(f"unknown cluster settings {sorted(unknown)}")
        d = dict(d)
        for key in ("blocks", "timesteps"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)
