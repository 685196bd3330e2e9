"""A store's compact encoding at work: its PCA bases, encoding a checked batch, decoding what is read.

``schema.FeatureSpec.encoding`` names the preset (``store/encodings/``);
this module applies it to a store's arrays:

- ``features/t<T>/<block>`` holds the stored values: float16 features
  (float16), int8 codes (int8), float16 or int8 PCA coefficients (pcaK,
  pcaK-int8), one chunk per tile;
- ``features/t<T>/<block>.scale_offset`` (int8 presets): (tile, 2, K)
  float32, the scale and offset of each channel of each tile;
- ``pca/t<T>/<block>/{mean,components,explained}`` (pca presets): the basis,
  written when the store is created and never after.

``EncodedReads`` gives ``FeatureStore`` its decoding reads (``read_features``,
``read_coefficients``, ``read_tile``'s features); the writer calls
``StoreEncoding.encode`` on each checked batch.  docs/store-format.md shows
the same decoding in plain numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pathsegdiff.errors import CorruptStoreError, SchemaError
from pathsegdiff.store import schema as S
from pathsegdiff.store.encodings import Encoding, PCABasis, bases_sha256, decode_block, encode_block, parse_preset

BlockKey = tuple[int, str]


class StoreEncoding:
    """The encoding of one store: its preset and, for PCA presets, one basis per (timestep, block)."""

    def __init__(self, spec: S.FeatureSpec, bases: Mapping[BlockKey, PCABasis] | None = None):
        self.spec = spec
        self.encoding: Encoding = parse_preset(spec.encoding)
        self.bases = dict(bases or {})
        check_bases(spec, self.bases)

    @property
    def is_default(self) -> bool:
        return self.encoding.is_default

    def basis(self, t: int, block: str) -> PCABasis | None:
        return self.bases.get((int(t), block)) if self.encoding.uses_pca else None

    def stored_arrays(self, t: int, block: str) -> list[str]:
        """The arrays one block at one timestep is stored in: its values, then its scale/offset (int8)."""
        names = [S.feature_path(t, block)]
        return names + [S.scale_offset_path(t, block)] if self.encoding.int8 else names

    def feature_arrays(self, features: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
        """``features[t][block]`` -> {array path: features}: what :meth:`encode` takes (the writer's batch check
        gives it the same)."""
        return {S.feature_path(t, b): x for t, blocks in features.items() for b, x in blocks.items()}

    def encode(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked arrays (feature path -> (B, C, h, w) features) -> the arrays to write, encoded."""
        if self.is_default:
            return arrays
        out = dict(arrays)
        for t in self.spec.timesteps:
            for b in self.spec.blocks:
                path = S.feature_path(t, b.name)
                enc = encode_block(arrays[path], self.encoding, self.basis(t, b.name))
                out[path] = enc.values
                if enc.quant is not None:
                    out[S.scale_offset_path(t, b.name)] = enc.quant
        return out

    def decode(self, t: int, block: str, stored: list[np.ndarray], coefficients: bool = False) -> np.ndarray:
        """``stored`` (the arrays of ``stored_arrays``, for one tile or a batch) -> features (or coefficients)."""
        if self.is_default:
            return stored[0]
        single = stored[0].ndim == 3  # one tile (K, h, w), else a batch (B, K, h, w)
        batch = [x[None] if single else x for x in stored]
        quant = batch[1] if len(batch) == 2 else None
        out = decode_block(batch[0], self.encoding, quant, self.basis(t, block), coefficients=coefficients)
        return out[0] if single else out


class EncodedReads:
    """What ``FeatureStore`` (reader.py) reads through the encoding: decoded features, PCA coefficients.

    Decoded features are float32 for every compact preset; a float16 store's
    come back as stored (float16).  Bases are read once per process.
    """

    @property
    def encoding(self) -> StoreEncoding:
        """The store's preset and PCA bases (read on first use; a pickled store rereads them)."""
        enc = self.__dict__.get("_store_encoding")
        if enc is None:
            spec = self.schema.features
            enc = StoreEncoding(spec, read_bases(lambda name: self.read_array(name, slice(None)), spec, self.location))
            self.__dict__["_store_encoding"] = enc
        return enc

    def read_features(self, idx: Any, timestep: int, block: str) -> np.ndarray:
        """Features (C, h, w) of one block at one timestep for ``idx`` (an int; a slice gives (n, C, h, w)), decoded."""
        self.check_selection([block], [timestep])
        return self.decoded({n: self.read_array(n, idx) for n in self.encoding.stored_arrays(timestep, block)},
                            timestep, block)

    def read_coefficients(self, idx: Any, timestep: int, block: str) -> np.ndarray:
        """A PCA store's float32 coefficients (K, h, w), not projected back.  A head whose first layer is a 1x1
        convolution W takes them with W composed with the basis: W @ components.T, plus W @ mean as a bias."""
        self.check_selection([block], [timestep])
        if not self.encoding.encoding.uses_pca:
            raise SchemaError(f"{self.location}: a {self.encoding.encoding.name} store holds no PCA coefficients; "
                              "use read_features")
        stored = [self.read_array(n, idx) for n in self.encoding.stored_arrays(timestep, block)]
        return self.encoding.decode(timestep, block, stored, coefficients=True)

    def decoded(self, got: Mapping[str, np.ndarray], timestep: int, block: str,
                coefficients: bool = False) -> np.ndarray:
        """One block's features (``coefficients``: a PCA store's coefficients) from its stored arrays (``got``:
        array path -> what was read)."""
        return self.encoding.decode(timestep, block, [got[n] for n in self.encoding.stored_arrays(timestep, block)],
                                    coefficients=coefficients)


def check_bases(spec: S.FeatureSpec, bases: Mapping[BlockKey, PCABasis]) -> None:
    """A PCA store has one basis per block and timestep, of the block's channels, matching ``basis_sha256``."""
    enc = parse_preset(spec.encoding)
    if not enc.uses_pca:
        if bases:
            raise SchemaError(f"encoding {enc.name} takes no PCA basis")
        return
    want = {(t, b.name): b for t in spec.timesteps for b in spec.blocks}
    if set(bases) != set(want):
        raise SchemaError(f"encoding {enc.name} needs one PCA basis per block and timestep: "
                          f"missing {sorted(set(want) - set(bases))}, unknown {sorted(set(bases) - set(want))}")
    for key, basis in bases.items():
        if basis.channels != want[key].channels or basis.k != enc.stored_channels(want[key].channels):
            raise SchemaError(f"PCA basis of t{key[0]}/{key[1]} is {basis.k}x{basis.channels}, expected "
                              f"{enc.stored_channels(want[key].channels)}x{want[key].channels}")
    if bases_sha256(bases) != spec.basis_sha256:  # the identity names the bases, so they must be these
        raise SchemaError(f"the PCA bases do not match the spec's basis_sha256 {spec.basis_sha256[:16] or '(empty)'}; "
                          "set it to encodings.bases_sha256(bases)")


def read_bases(read: Any, spec: S.FeatureSpec, where: Any = "store") -> dict[BlockKey, PCABasis]:
    """The PCA bases of a store; ``read(name)`` returns a whole array (the reader's ``read_array(name, slice(None))``)."""
    if not parse_preset(spec.encoding).uses_pca:
        return {}
    bases = {}
    for t in spec.timesteps:
        for b in spec.blocks:
            try:
                parts = {p: np.asarray(read(S.pca_path(t, b.name, p))) for p in S.PCA_PARTS}
                bases[(t, b.name)] = PCABasis(**parts)
            except SchemaError:
                parts = {}
            if not parts or not all(np.isfinite(v).all() for v in parts.values()):
                raise CorruptStoreError(f"{where}: the PCA basis of t{t}/{b.name} is missing or damaged "
                                        "(pca/ arrays); the store cannot be decoded")
    if bases_sha256(bases) != spec.basis_sha256:
        raise CorruptStoreError(f"{where}: the PCA bases do not match the store's basis_sha256 "
                                f"({spec.basis_sha256[:16]}...); the store cannot be decoded")
    return bases
