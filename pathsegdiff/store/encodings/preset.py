"""Compact encodings of stored features, by name: ``float16``, ``int8``, ``pcaK``, ``pcaK-int8``.

A preset says how a block's (C, h, w) float map becomes the bytes of its
chunk:

- ``float16`` (the default): the map itself, as the store has always held it;
- ``int8``: per tile and channel affine quantisation (``int8.py``): 1 byte per
  value plus a scale and an offset per channel, about 2x smaller;
- ``pcaK``: the map's channels projected on K principal components fitted on
  a calibration sample (``pca.py``), one basis per block and timestep, stored
  as float16 coefficients (K, h, w): C/K times smaller;
- ``pcaK-int8``: both, the coefficients quantised to int8.

The preset is part of the store's identity: a store never mixes encodings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from pathsegdiff.errors import ConfigError

DEFAULT_PRESET = "float16"
_PCA = re.compile(r"^pca(\d+)(-int8)?$")
MAX_COMPONENTS = 4096


@dataclass(frozen=True)
class Encoding:
    """How feature maps are stored: ``components`` principal components (0: every channel, no projection),
    then int8 quantisation or float16."""

    components: int = 0
    int8: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.components <= MAX_COMPONENTS:
            raise ConfigError(f"the number of PCA components must be 1..{MAX_COMPONENTS}, got {self.components}")

    @property
    def name(self) -> str:
        """The preset's name, as ``parse_preset`` reads it back."""
        if not self.components:
            return "int8" if self.int8 else DEFAULT_PRESET
        return f"pca{self.components}" + ("-int8" if self.int8 else "")

    @property
    def is_default(self) -> bool:
        """True for float16: the stored values are the features themselves."""
        return not self.components and not self.int8

    @property
    def uses_pca(self) -> bool:
        return self.components > 0

    @property
    def value_dtype(self) -> str:
        """The dtype of the stored values (features or PCA coefficients)."""
        return "int8" if self.int8 else "float16"

    def stored_channels(self, channels: int) -> int:
        """Channels of the stored values for a block of ``channels``: K, or C when K >= C."""
        return min(self.components, channels) if self.components else channels

    def stored_bytes(self, channels: int, height: int, width: int) -> int:
        """Bytes one tile of one block occupies in this encoding (values + int8 scale/offset)."""
        k = self.stored_channels(channels)
        if self.int8:
            return k * height * width + 2 * 4 * k  # int8 values, float32 scale and offset per channel
        return 2 * k * height * width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Encoding:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown encoding fields {sorted(unknown)}")
        return cls(**d)

    def __str__(self) -> str:
        return self.name


def parse_preset(name: str) -> Encoding:
    """``float16`` | ``int8`` | ``pca<K>`` | ``pca<K>-int8`` (e.g. ``pca64-int8``) -> an :class:`Encoding`."""
    text = str(name).strip().lower()
    if text in (DEFAULT_PRESET, "none", ""):
        return Encoding()
    if text == "int8":
        return Encoding(int8=True)
    m = _PCA.match(text)
    if m is None:
        raise ConfigError(f"unknown compact preset {name!r}; choose float16, int8, pcaK or pcaK-int8 "
                          "(K principal components, e.g. pca64 or pca64-int8)")
    k = int(m.group(1))
    if k < 1:
        raise ConfigError(f"compact preset {name!r}: K must be >= 1 (pcaK or pcaK-int8)")
    return Encoding(components=k, int8=bool(m.group(2)))


@dataclass(frozen=True)
class Calibration:
    """Which tiles and pixels a PCA basis is fitted on (seeded, so a rerun fits the same basis)."""

    tiles: int = 32  # calibration tiles, spread over slides (held in memory while the basis is fitted)
    pixels: int = 65536  # at most this many feature-map pixels (rows) per block and timestep
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tiles < 1 or self.pixels < 1:
            raise ConfigError(f"calibration needs >= 1 tile and >= 1 pixel, got {self.tiles} and {self.pixels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
