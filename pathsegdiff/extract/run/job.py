"""The extraction job: decode tiles, run the model, write in the background, resume.

The store is created or reopened first (identity checked before any model
work; a larger source than the store's appends its new tiles, listed in the
store's order first: :func:`align_to_store`) and only ``todo`` tiles go
through the per-tile loop (``loop.py``, shared with the ranges of a
distributed run).  A ``--compact pcaK`` run on a new store first computes its
calibration tiles and fits the PCA bases (``calibrate.py``); a resumed or
grown store keeps its own.  Slides get a QC thumbnail beside a local store
(``STORE.qc/``), and the progress bar names the slide being extracted.  What the status says is
written is complete, and a rerun resumes; the store lock is released on any
exit.  CPU features differ in their last bits between torch thread counts:
``threads`` fixes the count, and the provenance records it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from pathsegdiff import __version__
from pathsegdiff.errors import ConfigError, InputError, NotAStoreError, StoreWriteError
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.calibrate import pca_bases
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.loop import extract_tiles
from pathsegdiff.tiles.sources import ReorderedSource, TileSource
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, open_or_create, open_store
from pathsegdiff.store.grow import record_skipped_slides
from pathsegdiff.store.location import is_remote_client_error, parse_location, redact
from pathsegdiff.store.lock import StoreLock


def load_featurizer(cfg: ExtractConfig, backbone=None) -> Featurizer:
    """The run's featurizer; ``backbone``: an already-built model instead of loading ``cfg.model``."""
    return Featurizer.load(cfg.model, cfg.conditioning, cfg.features, cfg.device, cfg.dtype, backbone=backbone,
                           compile=cfg.compile)


def model_facts(featurizer: Featurizer) -> dict:
    """What the provenance records of the model, and a warning for seeded weights."""
    b = featurizer.backbone
    return {"model_id": b.model_id, "weights_sha256": b.weights_sha256, "backbone": b.describe(),
            "warning": featurizer.warning(), "notes": list(b.notes)}


def build_schema(source: TileSource, featurizer: Featurizer, cfg: ExtractConfig) -> StoreSchema:
    backbone, f, cond = featurizer.backbone, featurizer.cfg, featurizer.conditioner
    shapes = featurizer.block_shapes(source.tile_size)
    spec = FeatureSpec(
        model_id=backbone.model_id, weights_sha256=backbone.weights_sha256,
        model_config_sha256=backbone.config_sha256,
        blocks=tuple(BlockSpec(b, *shapes[b]) for b in f.blocks), timesteps=f.timesteps, noise_seed=f.seed,
        draws=f.draws, conditioning=cond.name, tile_size=source.tile_size, codec=cfg.codec, compute_dtype=cfg.dtype,
        encoding=cfg.compact,  # a PCA preset's basis_sha256 is set once its bases exist (calibrate.pca_bases)
    )
    latent = None
    if cfg.store_latent:
        if not backbone.latent_channels:
            raise ConfigError(f"model {backbone.model_id} has no latent to store; drop --store-latent")
        s = source.tile_size // backbone.downsample
        latent = (backbone.latent_channels, s, s)
    return StoreSchema(spec, n_tiles=len(source), class_names=tuple(source.class_names), ssl_dim=cond.dim,
                       latent_shape=latent, store_instances=bool(getattr(source, "has_instances", False)),
                       shard_tiles=cfg.shard_tiles)


def provenance(source: TileSource, cfg: ExtractConfig, facts: dict, **extra) -> dict:
    """The store's provenance: what ran, on what, with which settings."""
    return {"model": cfg.model, "model_id": facts["model_id"], "weights_sha256": facts["weights_sha256"],
            "backbone": facts.get("backbone", {}),
            "source": source.describe(), "extract": cfg.to_dict(), "command": " ".join(sys.argv),
            "torch_version": torch.__version__, "device": cfg.device,
            # CPU features differ in their last bits between thread counts: record it
            "torch_threads": cfg.threads or torch.get_num_threads(), "pathsegdiff_version": __version__, **extra}


@contextlib.contextmanager
def remote_errors(store: str):
    """A remote store's client failing (botocore, aiohttp: no OSError, so the store layer lets them by) as one line."""
    try:
        yield
    except Exception as e:
        if not is_remote_client_error(e):
            raise
        raise StoreWriteError(f"{store}: the store's server failed ({type(e).__name__}: {redact(e)}). "
                              "Tiles not yet written stay todo: rerun to resume") from e


def refuse_if_locked(store: str) -> None:
    local = parse_location(store).local_dir
    if local is not None and local.is_dir():
        StoreLock(local).refuse_if_held()


def align_to_store(source: TileSource, store: str, overwrite: bool = False) -> tuple[TileSource, int]:
    """``source`` with the tiles an existing store holds first, in the store's order (a store grows at its end),
    and the number of tiles the store holds (0: no store yet)."""
    if overwrite:
        return source, 0
    try:
        have = [str(t) for t in open_store(store).tile_ids()]
    except (FileNotFoundError, NotAStoreError):
        return source, 0
    position = {r.tile_id: i for i, r in enumerate(source.records)}
    first = [position[t] for t in have if t in position]
    taken = set(first)
    order = first + [i for i in range(len(source.records)) if i not in taken]
    return (source if order == list(range(len(order))) else ReorderedSource(source, order)), len(have)


class SlideProgress:
    """Names the slide (k of n) of the next tile on the progress bar; tqdm adds tiles/s and the ETA."""

    def __init__(self, bar, source: TileSource, todo):
        self.bar, self.done = bar, 0
        self.slide_ids = [source.records[int(i)].slide_id for i in todo]
        self.rank = {s: k for k, s in enumerate(dict.fromkeys(r.slide_id for r in source.records))}
        self._show()

    def _show(self) -> None:
        if self.done < len(self.slide_ids) and len(self.rank) > 1:
            sid = self.slide_ids[self.done]
            self.bar.set_description(f"slide {self.rank[sid] + 1}/{len(self.rank)} {sid}", refresh=False)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self._show()


def write_quality_control(source: TileSource, store: str, echo, progress: bool = False) -> None:
    """QC thumbnails of the source's slides beside a local store (``STORE.qc/``)."""
    from pathsegdiff.tiles.qc import write_qc

    if "://" in store:
        return
    paths = write_qc(source, Path(store + ".qc"), progress)
    if paths:
        echo(f"QC thumbnails of {len(paths)} slide(s): {store}.qc/ (tissue outline, tile grid, annotations)")


def preflight(schema: StoreSchema, n_todo: int, where: str, n_tiles: int | None = None) -> str:
    per = schema.bytes_per_tile()
    line = f"{n_todo} of {n_tiles or schema.n_tiles} tiles to extract, {per / 2**20:.2f} MiB per tile, " \
           f"about {n_todo * per / 2**30:.2f} GiB to write"
    parent = Path(where).expanduser().resolve().parent if "://" not in where else None
    if parent is not None and parent.exists():
        free = shutil.disk_usage(parent).free
        line += f"; {free / 2**30:.1f} GiB free"
        if n_todo * per > free:
            line += " -- NOT ENOUGH DISK"
    return line


def log_failures(store: str, ids, reasons) -> None:
    """Append unreadable tiles to STORE.errors.log (local stores only)."""
    if "://" not in store:
        with Path(store + ".errors.log").open("a") as f:
            f.writelines(f"{tid}\t{r}\n" for tid, r in zip(ids, reasons))


def run_extraction(source: TileSource, store: str | os.PathLike, cfg: ExtractConfig = ExtractConfig(),
                   progress: bool = True, echo=print, backbone=None) -> ExtractSummary:
    """Fill (or resume) the store at ``store`` with features of every tile of ``source``, in this process.

    ``backbone``: an already-built model to use instead of loading ``cfg.model`` (benchmarks, tests).
    """
    from tqdm import tqdm

    store = str(store)
    t0 = time.perf_counter()
    if not len(source):
        raise InputError(f"{getattr(source, 'root', '') or 'source'}: no tiles to extract")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        refuse_if_locked(store)  # a second writer is refused before it loads the model
        featurizer = load_featurizer(cfg, backbone)
        for line in filter(None, [featurizer.warning(), *featurizer.backbone.notes]):
            echo(line)
        cfg = replace(cfg, features=featurizer.cfg)  # the backbone's defaults filled in, for the provenance
        schema = build_schema(source, featurizer, cfg)
        summary = ExtractSummary(store, len(source))
        skipped = getattr(source, "skipped", None)  # a cohort's unusable slides (--skip-errors)
        source, n_before = align_to_store(source, store, cfg.overwrite)
        schema, bases, calibrated = pca_bases(source, featurizer, cfg, schema, store, summary, echo)
        with remote_errors(store), open_or_create(store, schema, source.records,
                                                  provenance(source, cfg, model_facts(featurizer)), overwrite=cfg.overwrite,
                                                  bases=bases) as w:
            replayed = calibrated.n_tiles if calibrated is not None else 0
            if calibrated is not None:
                calibrated.replay(w)  # the calibration tiles, computed once, written like any other
                for idx, reasons in calibrated.failed:  # unreadable ones (--skip-errors), logged as any other
                    log_failures(store, list(w.tile_ids(idx)), reasons)
            summary.appended = w.n_tiles - n_before if n_before else 0
            if skipped:
                log_failures(store, list(skipped), [f"slide skipped: {r}" for r in skipped.values()])
                summary.failed.update({slide: f"slide skipped: {r}" for slide, r in skipped.items()})
            if skipped is not None:
                record_skipped_slides(w.location, skipped)
            write_quality_control(source, store, echo, progress)
            todo = w.missing()
            summary.already_written = int((w.status() != 0).sum()) - replayed
            if cfg.limit is not None:
                todo = todo[: max(cfg.limit - replayed, 0)]
            echo(preflight(schema, len(todo), store, w.n_tiles))
            with tqdm(total=len(todo), unit="tile", desc="extract", disable=not progress, smoothing=0.1) as bar:
                extract_tiles(source, todo, w, featurizer, cfg, summary, on_batch=SlideProgress(bar, source, todo),
                              on_failed=lambda ids, reasons: log_failures(store, ids, reasons))
    finally:
        torch.set_num_threads(threads_before)
    summary.seconds = time.perf_counter() - t0
    return summary


