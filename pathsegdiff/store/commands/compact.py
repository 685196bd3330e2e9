"""``pathsegdiff store compact SRC -o DST --compact PRESET``: a compact copy of a finished float16 store.

The source must be complete and sound: every tile written or failed (none
todo; resume the extraction first), and ``verify`` finding nothing wrong
(a damaged tile would otherwise be encoded into a store that looks sound).
A PCA preset fits its bases on a seeded calibration sample of the source's
written tiles, spread over slides (``Calibration``).  Every written tile is
then read, encoded and written; labels, RGB, instances, SSL embeddings,
latents, the tile table and failed tiles (with their reasons) are carried
over unchanged.  The destination's identity differs from the source's (its
``encoding`` and ``basis_sha256``); its provenance names the source.

A local destination is written beside its final path and renamed into place
once whole, so a failure (an overflow, a full disk, Ctrl-C) leaves no
half-written store behind and an existing store replaced with ``--overwrite``
survives until the new one is complete; a remote destination is written in
place and deleted on failure.  The destination is never the source, nor a
directory that is not a store.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace

import numpy as np

from pathsegdiff.errors import (ConfigError, CorruptStoreError, NotAStoreError, SchemaError, StoreExistsError,
                                StoreWriteError)
from pathsegdiff.store import schema as S
from pathsegdiff.store.create import create_store
from pathsegdiff.store.encodings import Calibration, bases_sha256, calibration_tiles, fit_bases, parse_preset
from pathsegdiff.store.backend.location import Location, parse_location, same_or_inside
from pathsegdiff.store.reader import FeatureStore, open_store, read_root_attrs
from pathsegdiff.store.commands.verify import verify_store

BATCH = 8  # tiles read, encoded and written together


@dataclass
class CompactSummary:
    source: str
    destination: str
    preset: str
    tiles: int  # written tiles carried over
    failed: int  # failed tiles carried over (they hold no data)
    source_feature_bytes: int  # per tile, uncompressed
    feature_bytes: int
    seconds: float

    def line(self) -> str:
        ratio = self.source_feature_bytes / max(self.feature_bytes, 1)
        return (f"{self.tiles} tiles compacted to {self.preset} ({self.failed} failed tiles carried over): features "
                f"{self.source_feature_bytes / 2**20:.2f} -> {self.feature_bytes / 2**20:.3f} MiB per tile "
                f"({ratio:.1f}x fewer bytes), {self.seconds:.1f} s -> {self.destination}")


def check_compactable(fs: FeatureStore, where: str | os.PathLike) -> None:
    """Refuse a store (``fs``, opened from ``where``) that is already compact, unfinished or damaged."""
    spec = fs.schema.features
    if not parse_preset(spec.encoding).is_default:
        raise SchemaError(f"{fs.location}: already {spec.encoding}; compact the float16 store it was made from")
    todo = int((fs.status() == S.STATUS_TODO).sum())
    if todo:
        raise SchemaError(f"{fs.location}: unfinished, {todo} tiles still todo; resume the extraction "
                          "(rerun the same 'pathsegdiff extract' command) before compacting")
    report = verify_store(where)
    if not report.ok:
        first = report.lines()[:3]
        raise CorruptStoreError(f"{fs.location}: damaged ({len(report.lines())} problems, e.g. {'; '.join(first)}); "
                                "run 'pathsegdiff store verify' and re-extract the damaged tiles before compacting")


def fit_store_bases(fs: FeatureStore, components: int, calibration: Calibration) -> dict:
    """One basis per block and timestep, on a seeded sample of the written tiles spread over slides."""
    written = fs.written()
    if not len(written):
        raise SchemaError(f"{fs.location}: no written tile to fit PCA bases on; use int8, or extract tiles first")
    slides = np.asarray(fs.table()["slide_id"], dtype=object)[written]
    sample = written[calibration_tiles([str(s) for s in slides], calibration.tiles, calibration.seed)]
    features = {(t, b): np.stack([fs.read_features(int(i), t, b) for i in sample])
                for t in fs.timesteps for b in fs.blocks}
    return fit_bases(features, components, calibration)


def _batch(fs: FeatureStore, idx: np.ndarray) -> S.TileBatch:
    tiles = [fs.read_tile(int(i)) for i in idx]
    beside = [a.kind for a in S.data_arrays(fs.schema) if a.kind in S.EXTRA_KINDS]  # labels, rgb, ... as stored
    return S.TileBatch(
        features={t: {b: np.stack([x.features[t][b] for x in tiles]) for b in fs.blocks} for t in fs.timesteps},
        **{kind: np.stack([getattr(x, kind) for x in tiles]) for kind in beside},
    )


def _refuse_existing(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool) -> None:
    """Refuse the source itself (or a path inside it), a store without ``overwrite``, and any other non-empty
    directory: a compact copy never deletes what it was not asked to replace."""
    loc = parse_location(dst)
    if same_or_inside(parse_location(src), loc):
        raise ConfigError(f"{dst}: is the source store {src} or lies inside it; write the compact copy elsewhere")
    try:
        read_root_attrs(loc)
    except FileNotFoundError:
        return
    except NotAStoreError:
        if loc.local_dir is not None and loc.local_dir.is_dir() and any(loc.local_dir.iterdir()):
            raise StoreExistsError(f"{dst}: exists and is not a pathsegdiff store; choose another destination") from None
        return
    if loc.local_dir is not None:
        foreign = S.foreign_entries(p.name for p in loc.local_dir.iterdir())
        if foreign:
            raise StoreExistsError(f"{dst}: holds files that are not the store's ({', '.join(foreign[:3])}); "
                                   "refusing to replace it: move them out or choose another destination")
    if not overwrite:
        raise StoreExistsError(f"{dst}: a store already exists; pass --overwrite to replace it")


def _staging(dst: Location) -> str:
    """Where the copy is written: beside a local destination (renamed into place once whole), else in place."""
    if dst.local_dir is None:
        return dst.raw
    return str(dst.local_dir.parent / f".{dst.local_dir.name}.compacting-{os.getpid()}")


def _discard(target: str, dst: Location) -> None:
    """After a failure: remove the partial copy, so no half-written store is left looking whole."""
    if dst.local_dir is not None:
        shutil.rmtree(target, ignore_errors=True)
        return
    try:  # a remote destination was written in place
        import fsspec

        fs, path = fsspec.core.url_to_fs(dst.raw)
        fs.rm(path, recursive=True)
    except Exception:  # noqa: BLE001 - best effort; the error that stopped the copy is the one to report
        pass


def _publish(target: str, dst: Location) -> None:
    if dst.local_dir is None:
        return
    if dst.local_dir.exists():  # a store --overwrite replaces, or an empty directory (_refuse_existing)
        shutil.rmtree(dst.local_dir)
    os.replace(target, dst.local_dir)


def compact_store(src: str | os.PathLike, dst: str | os.PathLike, preset: str,
                  calibration: Calibration = Calibration(), overwrite: bool = False, progress: bool = False,
                  echo=lambda line: None) -> CompactSummary:
    """Write a ``preset`` copy of the finished float16 store ``src`` to ``dst``."""
    t0 = time.perf_counter()
    encoding = parse_preset(preset)
    if encoding.is_default:
        raise ConfigError("--compact float16 keeps the features as they are; choose int8, pcaK or pcaK-int8")
    _refuse_existing(src, dst, overwrite)  # before the source is verified and the bases fitted, not after
    fs = open_store(src)
    check_compactable(fs, src)
    spec = fs.schema.features
    bases = None
    if encoding.uses_pca and all(b.channels <= encoding.components for b in spec.blocks):
        raise ConfigError(f"--compact {encoding.name}: every block of {src} has at most {encoding.components} channels "
                          f"({', '.join(f'{b.name} {b.channels}' for b in spec.blocks)}), so it would compress "
                          f"nothing; choose K below {max(b.channels for b in spec.blocks)}")
    if encoding.uses_pca:
        echo(f"fitting {encoding.name} bases on {calibration.tiles} calibration tiles (seed {calibration.seed})")
        bases = fit_store_bases(fs, encoding.components, calibration)
    # BitRound rounds float bits: int8 codes take the lossless default (the source's rounding is already in them).
    codec = "none" if encoding.int8 and spec.codec.startswith("bitround") else spec.codec
    new_spec = replace(spec, encoding=encoding.name, basis_sha256=bases_sha256(bases) if bases else "", codec=codec)
    schema = replace(fs.schema, features=new_spec)
    provenance = {**fs.provenance, "compacted_from": {
        "store": str(fs.location), "identity": fs.identity, "preset": encoding.name,
        "calibration": calibration.to_dict() if bases else None}}
    status = fs.status()
    written = np.flatnonzero(status == S.STATUS_WRITTEN)
    failed = np.flatnonzero(status == S.STATUS_FAILED)
    from tqdm import tqdm

    dst_loc = parse_location(dst)
    target = _staging(dst_loc)
    try:
        with create_store(target, schema, fs.records(), provenance, overwrite=True, bases=bases) as w, \
                tqdm(total=len(written), unit="tile", desc=f"compact {encoding.name}", disable=not progress) as bar:
            if len(failed):
                reasons = fs.fail_reasons()
                ids = fs.tile_ids(failed)
                w.mark_failed(failed, [reasons.get(str(i), "failed in the source store") for i in ids])
            for a in range(0, len(written), BATCH):
                idx = written[a : a + BATCH]
                w.write(idx, _batch(fs, idx))
                bar.update(len(idx))
    except StoreWriteError as e:  # the writer's advice ("rerun to resume") does not hold for a copy
        _discard(target, dst_loc)
        raise StoreWriteError(f"{dst}: writing the compact copy failed: {getattr(e, 'reason', e)}. Nothing was left "
                              "under the destination: free space and run the command again (it starts over)") from e
    except BaseException:
        _discard(target, dst_loc)
        raise
    _publish(target, dst_loc)
    out = open_store(dst)
    return CompactSummary(str(fs.location), str(out.location), encoding.name, len(written), len(failed),
                          fs.schema.feature_bytes_per_tile(), out.schema.feature_bytes_per_tile(),
                          time.perf_counter() - t0)
