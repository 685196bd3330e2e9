"""The calibration pass of a ``--compact pcaK`` extraction: fit the PCA bases before the store exists.

A PCA store holds one basis per block and timestep, and its identity
includes them, so they are fitted first: a seeded sample of tiles spread
over the slides (``Calibration``: how many, which pixels, the seed) goes
through the same per-tile loop as every other tile (``loop.py``), with a
:class:`BatchRecorder` standing in for the store writer.  The bases are
fitted on the recorded features; the store is then created with them, and
the recorded batches are written into it (:meth:`BatchRecorder.replay`), so
no tile is computed twice.  A resumed or appending run reads the bases from
the store and never calibrates again.  A distributed run calibrates on its
coordinator, then distributes the remaining tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pathsegdiff.errors import InputError, NotAStoreError
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.loop import extract_tiles
from pathsegdiff.store import StoreSchema, TileBatch, open_store
from pathsegdiff.store.encoded import StoreEncoding
from pathsegdiff.store.encodings import Calibration, PCABasis, bases_sha256, calibration_tiles, fit_bases, parse_preset
from pathsegdiff.tiles.sources import TileSource


class BatchRecorder:
    """Takes the place of a ``StoreWriter`` in the loop and keeps what it would have written, in order."""

    def __init__(self, schema: StoreSchema, tile_ids: Sequence[str]):
        self.schema = schema
        self._ids = np.asarray(list(tile_ids), dtype=object)
        self.batches: list[tuple[list[int], TileBatch, Any]] = []
        self.failed: list[tuple[list[int], list[str]]] = []

    def tile_ids(self, idx: Any) -> np.ndarray:
        return self._ids[np.asarray(idx, dtype=np.int64)]

    def write(self, indices: Sequence[int], batch: TileBatch, finite: Any = None) -> None:
        self.batches.append((list(map(int, indices)), batch, finite))

    def mark_failed(self, indices: Sequence[int], reasons: Sequence[str]) -> None:
        self.failed.append((list(map(int, indices)), list(reasons)))

    @property
    def n_tiles(self) -> int:
        """Tiles recorded, written and failed."""
        return sum(len(i) for i, _, _ in self.batches) + sum(len(i) for i, _ in self.failed)

    def features(self) -> dict[tuple[int, str], np.ndarray]:
        """(timestep, block) -> the recorded tiles' features (N, C, h, w), in the order they were computed."""
        out: dict[tuple[int, str], list[np.ndarray]] = {}
        for _, batch, _ in self.batches:
            for t, per_block in batch.features.items():
                for b, x in per_block.items():
                    out.setdefault((int(t), b), []).append(np.asarray(x))
        return {key: np.concatenate(parts) for key, parts in out.items()}

    def replay(self, w) -> None:
        """Write what was recorded into the store writer ``w``: the same calls, in the same order."""
        for idx, reasons in self.failed:
            w.mark_failed(idx, reasons)
        for idx, batch, finite in self.batches:
            w.write(idx, batch, finite=finite)


def calibrate(source: TileSource, featurizer: Featurizer, cfg: ExtractConfig, schema: StoreSchema, components: int,
              calibration: Calibration, summary: ExtractSummary) -> tuple[dict[tuple[int, str], PCABasis], BatchRecorder]:
    """Compute the calibration tiles of ``source`` and fit one basis per block and timestep on them.

    Returns the bases and the recorder holding the computed batches (to be replayed into the new store).
    """
    records = source.records
    todo = calibration_tiles([r.slide_id for r in records], calibration.tiles, calibration.seed)
    recorder = BatchRecorder(schema, [r.tile_id for r in records])
    extract_tiles(source, todo, recorder, featurizer, cfg, summary)
    samples = recorder.features()
    if not samples:
        raise InputError(f"none of the {len(todo)} calibration tiles could be read, so no PCA basis can be fitted")
    return fit_bases(samples, components, calibration), recorder


def stored_encoding(store: str, overwrite: bool = False) -> StoreEncoding | None:
    """The encoding (preset and PCA bases) of the store already at ``store``; None: none there (or --overwrite)."""
    if overwrite:
        return None
    try:
        return open_store(store).encoding
    except (FileNotFoundError, NotAStoreError):
        return None


def with_basis(schema: StoreSchema, basis_sha256: str) -> StoreSchema:
    """``schema`` naming the hash of its PCA bases (its identity then covers them)."""
    return replace(schema, features=replace(schema.features, basis_sha256=basis_sha256))


def pca_bases(source: TileSource, calibrator: Callable[[], Featurizer], cfg: ExtractConfig, schema: StoreSchema,
              store: str, summary: ExtractSummary, echo=print) -> tuple[StoreSchema, dict | None, BatchRecorder | None]:
    """For a PCA preset: the schema naming its bases, the bases, and the calibration batches to replay (or None).

    A store already there with the same preset gives its own bases (resume, append: never refitted); one with
    another preset gives none, and the identity check then names the preset.  Otherwise the bases are fitted
    on ``cfg.calibration_tiles`` tiles computed now by ``calibrator()``'s featurizer (a distributed run's
    coordinator loads the model only then), whose batches are replayed into the new store.
    """
    enc = parse_preset(cfg.compact)
    if not enc.uses_pca:
        return schema, None, None
    have = stored_encoding(store, cfg.overwrite)
    if have is not None:
        return (with_basis(schema, have.spec.basis_sha256), have.bases, None) if have.encoding == enc else \
            (schema, None, None)
    calibration = Calibration(tiles=cfg.calibration_tiles)
    echo(f"calibrating {enc.name}: {calibration.tiles} tiles spread over the slides (computed once, then stored; "
         "they count towards --limit)")
    bases, recorder = calibrate(source, calibrator(), cfg, schema, enc.components, calibration, summary)
    return with_basis(schema, bases_sha256(bases)), bases, recorder
