"""The one extraction plan: prepare, then run the ranges, then finish; the runners only execute ranges.

:meth:`ExtractionPlan.prepare` takes a description of the model (its schema,
filled-in feature options and facts, from this process or from a worker) and
does everything that must happen once, on the process that owns the store:
align the source to an existing store (a grown store keeps its tiles in its
own order, new ones at its end, and its tiles of another origin, real or
synthetic, where they are), calibrate a PCA preset on a new store (the
calibration batches are kept and replayed into it, so no tile is computed
twice), and build the provenance.  :meth:`ExtractionPlan.begin` opens the
store's writer, replays the calibration, records the slides a cohort skipped,
writes the QC thumbnails and returns the tiles still to do.  The in-process
runner (``job.py``) and the dask runner (``distributed.py``) then only decide
who computes those tiles.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathsegdiff import __version__
from pathsegdiff.errors import ConfigError, InputError, NotAStoreError, OutputError
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.calibrate import BatchRecorder, pca_bases
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.describe import describe_model
from pathsegdiff.store import StoreSchema, StoreWriter, open_or_create, open_store
from pathsegdiff.store.grow import record_skipped_slides
from pathsegdiff.store.backend.location import parse_location
from pathsegdiff.store.encodings import parse_preset
from pathsegdiff.store.backend.lock import StoreLock
from pathsegdiff.store.schema import STATUS_FAILED, STATUS_TODO, STATUS_WRITTEN
from pathsegdiff.store.tile_table import is_synthetic
from pathsegdiff.tiles.sources import ReorderedSource, TileSource


def provenance(source: TileSource, cfg: ExtractConfig, facts: dict, **extra) -> dict:
    """The store's provenance: what ran, on what, with which settings."""
    return {"model": cfg.model, "model_id": facts["model_id"], "weights_sha256": facts["weights_sha256"],
            "backbone": facts.get("backbone", {}),
            "source": source.describe(), "extract": cfg.to_dict(), "command": " ".join(sys.argv),
            "torch_version": torch.__version__, "device": cfg.device,
            # CPU features differ in their last bits between thread counts: record it
            "torch_threads": cfg.threads or torch.get_num_threads(), "pathsegdiff_version": __version__, **extra}


def align_to_store(source: TileSource, store: str, overwrite: bool = False) -> tuple[TileSource, int]:
    """``source`` with the tiles an existing store holds first, in the store's order (a store grows at its end),
    and the number of tiles the store holds (0: no store yet).

    The store's tiles of another origin than the source's (the real tiles of a store synthetic ones are added to,
    or the other way round) come from another source: they keep their places as the store's own records, never
    loaded, so they must all be written already, and no tile of this source may reuse one of their ids."""
    if overwrite:
        return source, 0
    try:
        fs = open_store(store)
    except (FileNotFoundError, NotAStoreError):
        return source, 0
    table = fs.table(["tile_id", "origin", "status"])
    have, mine = [str(t) for t in table["tile_id"]], source_origin(source)
    other = np.flatnonzero(is_synthetic(table) != (mine == "synthetic"))
    position = {r.tile_id: i for i, r in enumerate(source.records)}
    if len(other):
        check_other_origin(store, table, other, position, mine)
    kept = set(other.tolist())
    order: list = [fs.record(k) if k in kept else position[t] for k, t in enumerate(have) if k in kept or t in position]
    taken = {o for o in order if isinstance(o, int)}
    order += [i for i in range(len(source.records)) if i not in taken]
    return (source if order == list(range(len(order))) else ReorderedSource(source, order)), len(have)


def source_origin(source: TileSource) -> str:
    """real or synthetic: the origin of a source's tiles (every tile of one source has the same)."""
    return source.records[0].origin if source.records else "real"


def check_other_origin(store: str, table: dict, other: np.ndarray, position: dict, mine: str) -> None:
    """Refuse to add tiles of origin ``mine`` to a store whose tiles of the other origin are not all written (no
    source here could compute them), or whose tile ids this source reuses."""
    theirs = "real" if mine == "synthetic" else "synthetic"
    todo = int((np.asarray(table["status"])[other] == STATUS_TODO).sum())
    if todo:
        raise InputError(f"{store}: {todo} of its {len(other)} {theirs} tiles are not written yet, and they come from "
                         f"another source than these {mine} ones: finish that extraction first (rerun it to resume)")
    ids = [str(table["tile_id"][k]) for k in other if str(table["tile_id"][k]) in position]
    if ids:
        raise InputError(f"{store}: {len(ids)} tile ids of this {mine} source are {theirs} tiles of the store "
                         f"(e.g. {ids[0]}): if they are the same tiles, pass --origin {theirs}; else rename those "
                         "images (tile ids are <image stem>_<x>_<y>)")


def check_pca_width(schema: StoreSchema, preset: str, echo) -> None:
    """A PCA preset keeps K components per block: refused when no block has more than K channels (it would
    store as much as float16, or more); a block narrower than K keeps all its channels, and the console says so."""
    enc = parse_preset(preset)
    if not enc.uses_pca:
        return
    widths = {b.name: b.channels for b in schema.features.blocks}
    narrow = {name: c for name, c in widths.items() if c <= enc.components}
    if len(narrow) == len(widths):
        raise ConfigError(f"--compact {enc.name}: every block has at most {enc.components} channels "
                          f"({', '.join(f'{n} {c}' for n, c in widths.items())}), so it would compress nothing; "
                          f"choose K below {max(widths.values())}")
    if narrow:
        echo(f"--compact {enc.name}: {', '.join(f'{n} ({c} channels)' for n, c in narrow.items())} keep all their "
             f"channels; K = {enc.components} applies to the wider blocks")


def require_tiles(source: TileSource) -> None:
    if not len(source):
        raise InputError(f"{getattr(source, 'root', '') or 'source'}: no tiles to extract")


def refuse_if_locked(store: str) -> None:
    """A second writer is refused before it loads the model."""
    local = parse_location(store).local_dir
    if local is not None and local.is_dir():
        StoreLock(local).refuse_if_held()


def preflight(schema: StoreSchema, n_todo: int, where: str, n_tiles: int | None = None) -> str:
    """The line said before the long work: tiles to do, bytes, free disk.  A local store whose projected size
    (uncompressed) exceeds the free disk is refused here, in one line, rather than filling the disk."""
    per = schema.bytes_per_tile()
    line = f"{n_todo} of {n_tiles or schema.n_tiles} tiles to extract, {per / 2**20:.2f} MiB per tile, " \
           f"about {n_todo * per / 2**30:.2f} GiB to write"
    parent = Path(where).expanduser().resolve().parent if "://" not in where else None
    if parent is not None and parent.exists():
        free = shutil.disk_usage(parent).free
        line += f"; {free / 2**30:.1f} GiB free"
        if n_todo * per > free:
            raise OutputError(f"{where}: {n_todo} tiles need about {n_todo * per / 2**30:.2f} GiB and the disk has "
                              f"{free / 2**30:.2f} GiB free; free space, write elsewhere, or extract part of the "
                              f"source now with --limit {max(1, int(free // per))} (a rerun resumes)")
    return line


def log_failures(store: str, ids, reasons) -> None:
    """Append unreadable tiles to STORE.errors.log (local stores only)."""
    if "://" not in store:
        with Path(store + ".errors.log").open("a") as f:
            f.writelines(f"{tid}\t{r}\n" for tid, r in zip(ids, reasons))


def write_quality_control(source: TileSource, store: str, echo, progress: bool = False) -> None:
    """QC thumbnails of the source's slides beside a local store (``STORE.qc/``)."""
    from pathsegdiff.tiles.qc import write_qc

    if "://" in store:
        return
    paths = write_qc(source, Path(store + ".qc"), progress)
    if paths:
        echo(f"QC thumbnails of {len(paths)} slide(s): {store}.qc/ (tissue outline, tile grid, annotations)")


@dataclass
class ExtractionPlan:
    """One extraction, prepared: the aligned source, the schema (with its PCA bases) and the provenance."""

    source: TileSource  # aligned to the store: its tiles first, in the store's order
    store: str
    cfg: ExtractConfig  # the backbone's feature defaults filled in
    schema: StoreSchema
    provenance: dict
    summary: ExtractSummary
    echo: Callable[[str], None] = print
    bases: dict | None = None
    calibrated: BatchRecorder | None = None
    n_before: int = 0  # tiles the store held before this run
    skipped: dict | None = None  # a cohort's unusable slides (--skip-errors): slide -> reason
    started: float = field(default_factory=time.perf_counter)
    preflight_line: str = ""  # set by begin(): tiles to do, bytes, free disk

    @classmethod
    def prepare(cls, source: TileSource, store: str, cfg: ExtractConfig, model: dict,
                calibrator: Callable[[], Featurizer], echo=print, started: float | None = None,
                **extra_provenance: Any) -> "ExtractionPlan":
        """Align, calibrate and describe one run.  ``model``: :func:`describe_model`'s dict (from any process);
        ``calibrator``: the featurizer a PCA preset's calibration runs on (called only when a new store needs it);
        ``started``: when the run began (perf_counter), for the summary's seconds."""
        started = time.perf_counter() if started is None else started
        require_tiles(source)
        cfg = replace(cfg, features=model["features"])  # the backbone's defaults, for the provenance
        check_pca_width(model["schema"], cfg.compact, echo)
        for note in getattr(source, "notes", ()):
            echo(note)
        summary = ExtractSummary(store, len(source))
        skipped = getattr(source, "skipped", None)
        source, n_before = align_to_store(source, store, cfg.overwrite)
        schema, bases, calibrated = pca_bases(source, calibrator, cfg, model["schema"], store, summary, echo)
        prov = provenance(source, cfg, model, **extra_provenance)
        return cls(source, store, cfg, schema, prov, summary, echo, bases, calibrated, n_before, skipped, started)

    @contextlib.contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        """The store, created or resumed (identity checked, lock held); a remote store's client failures are
        translated by the store itself (store/backend/remote.py), on every later write too."""
        with open_or_create(self.store, self.schema, self.source.records, self.provenance,
                            overwrite=self.cfg.overwrite, bases=self.bases) as w:
            yield w

    def begin(self, w: StoreWriter, progress: bool = False) -> np.ndarray:
        """Replay the calibration, record skipped slides, write QC; the tile indices still to do (``--limit``)."""
        replayed = 0
        if self.calibrated is not None:
            self.calibrated.replay(w)  # the calibration tiles, computed once, written like any other
            replayed = self.calibrated.n_tiles
            for idx, reasons in self.calibrated.failed:  # unreadable ones (--skip-errors), logged as any other
                self.log_failures(list(w.tile_ids(idx)), reasons)
        self.summary.appended = w.n_tiles - self.n_before if self.n_before else 0
        if self.skipped:
            self.log_failures(list(self.skipped), [f"slide skipped: {r}" for r in self.skipped.values()])
            self.summary.failed.update({s: f"slide skipped: {r}" for s, r in self.skipped.items()})
        if self.skipped is not None:
            record_skipped_slides(w.location, self.skipped)
        write_quality_control(self.source, self.store, self.echo, progress)
        todo = w.missing()
        status = w.status()
        self.summary.already_written = int((status == STATUS_WRITTEN).sum()) - replayed
        self.summary.already_failed = int((status == STATUS_FAILED).sum())
        if self.cfg.limit is not None:
            todo = todo[: max(self.cfg.limit - replayed, 0)]
        self.preflight_line = preflight(self.schema, len(todo), self.store, w.n_tiles)
        return todo

    def log_failures(self, ids, reasons) -> None:
        log_failures(self.store, ids, reasons)

    def finish(self) -> ExtractSummary:
        self.summary.seconds = time.perf_counter() - self.started
        return self.summary


__all__ = ["ExtractionPlan", "align_to_store", "describe_model", "log_failures", "preflight", "provenance",
           "refuse_if_locked"]
