"""The extraction job: decode tiles, run the model, write in the background, resume.

One resumable per-item loop, :func:`extract_tiles`, shared by the
single-process job (:func:`run_extraction`) and the workers of a distributed
run (``distributed.py``):

- the store is created or reopened first (identity checked, so a mismatch is
  refused before any model work), and only tiles whose status is ``todo``
  are decoded;
- DataLoader workers decode tiles; a tile that cannot be read is a named
  failure (``unreadable``), recorded in the store and a log with
  ``--skip-errors``, or the end of the run without it;
- the model runs on the device (autocast for bf16/fp16), features are cast to
  the storage dtype on the device, and a writer thread takes each batch from
  a bounded queue, so the model never waits on compression or disk;
- on any exit, Ctrl-C included, the writer finishes the batches already
  computed and the store lock is released: what the status says is written
  is complete, and a rerun resumes.

On the CPU, features differ in their last bits between torch intra-op thread
counts: ``threads`` fixes the count (``None``: torch's default), and the
count used is recorded in the provenance.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathsegdiff import __version__
from pathsegdiff.errors import ConfigError, InputError, PathsegdiffError
from pathsegdiff.extract.conditioning import make_conditioner
from pathsegdiff.extract.features import FeatureConfig, FeatureExtractor, block_shapes
from pathsegdiff.extract.models import load_model
from pathsegdiff.extract.sources import TileSource
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, open_or_create
from pathsegdiff.store.schema import DEFAULT_CODEC

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a run needs besides the source and the store path (saved in provenance)."""

    model: str = "tiny"
    conditioning: str = "null"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "fp32"  # compute dtype; the store holds float16 whatever this is
    codec: str = DEFAULT_CODEC
    decode_workers: int | None = None  # decode processes; None: none on a 2-core machine, else up to 4
    threads: int | None = None  # torch intra-op threads; None: torch's default
    shard_tiles: int = 1  # >1: tile arrays sharded, this many tiles per shard object (remote stores)
    limit: int | None = None  # at most this many tiles this run
    skip_errors: bool = False
    overwrite: bool = False
    store_latent: bool = False
    queue_batches: int = 4  # computed batches waiting for the writer

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.decode_workers is None:  # decoding in-process beats competing with the model for 2 cores
            cores = os.cpu_count() or 1
            object.__setattr__(self, "decode_workers", 0 if cores <= 2 else min(4, cores // 2))
        if self.batch_size < 1 or self.decode_workers < 0 or (self.limit is not None and self.limit < 0):
            raise ConfigError("batch size must be >= 1, decode workers >= 0 and limit >= 0")
        if (self.threads is not None and self.threads < 1) or self.shard_tiles < 1:
            raise ConfigError("--threads and --shard-tiles must be >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        return d


@dataclass
class ExtractSummary:
    store: str
    total: int
    written: int = 0
    already_written: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # tile id -> reason
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{self.written} tiles written, {self.already_written} already written, {len(self.failed)} failed, "
                f"{self.seconds:.1f} s, {self.tiles_per_s:.2f} tiles/s -> {self.store}")


@dataclass
class Model:
    """The model, its conditioner and feature hooks on the device: loaded once, used for every batch."""

    ldm: object
    cond: object
    extractor: FeatureExtractor
    autocast: object

    @classmethod
    def load(cls, cfg: ExtractConfig, ldm=None) -> Model:
        """``ldm``: an already-built model to use instead of loading ``cfg.model`` (benchmarks, tests)."""
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
        ldm = load_model(cfg.model, device=cfg.device) if ldm is None else ldm
        cond = make_conditioner(cfg.conditioning, ldm, device=cfg.device)
        autocast = (torch.autocast(device_type=torch.device(cfg.device).type, dtype=DTYPES[cfg.dtype])
                    if cfg.dtype != "fp32" else contextlib.nullcontext())
        return cls(ldm, cond, FeatureExtractor(ldm, cfg.features), autocast)

    def facts(self) -> dict:
        """What the provenance records of the model, and a warning for seeded weights."""
        ldm = self.ldm
        warning = (f"model {ldm.model_id}: weights are seeded, NOT trained; use it to test the pipeline, "
                   "not for science") if ldm.untrained else ""
        return {"model_id": ldm.model_id, "weights_sha256": ldm.weights_sha256, "warning": warning}


class _Decode(Dataset):
    """Decodes tile ``todo[k]``; an unreadable tile comes back as its error message."""

    def __init__(self, source: TileSource, todo: np.ndarray):
        self.source, self.todo = source, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        i = int(self.todo[k])
        try:
            return i, self.source.load(i), None
        except PathsegdiffError as e:  # named skip reason: unreadable
            return i, None, str(e)


def _collate(items):
    return items


class _Writer:
    """A background thread writing batches in order; its first error is re-raised in the caller."""

    def __init__(self, depth: int):
        self.q, self.error = queue.Queue(maxsize=depth), None
        self.thread = threading.Thread(target=self._run, name="pathsegdiff-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.q.get()) is not None:
            if self.error is None:
                try:
                    job()
                except BaseException as e:  # handed to the main thread
                    self.error = e

    def put(self, job) -> None:
        self._raise()
        self.q.put(job)

    def close(self, raise_error: bool = True) -> None:
        self.q.put(None)
        self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def build_schema(source: TileSource, ldm, cond, cfg: ExtractConfig) -> StoreSchema:
    shapes = block_shapes(ldm, cfg.features, source.tile_size)  # ConfigError names unknown blocks
    f = cfg.features
    spec = FeatureSpec(
        model_id=ldm.model_id, weights_sha256=ldm.weights_sha256, model_config_sha256=ldm.config_sha256,
        blocks=tuple(BlockSpec(b, *shapes[b]) for b in f.blocks), timesteps=f.timesteps, noise_seed=f.seed,
        draws=f.draws, conditioning=cond.name, tile_size=source.tile_size, codec=cfg.codec,
    )
    latent = None
    if cfg.store_latent:
        s = source.tile_size // ldm.downsample
        latent = (ldm.latent_channels, s, s)
    return StoreSchema(spec, n_tiles=len(source), class_names=tuple(source.class_names), ssl_dim=cond.dim,
                       latent_shape=latent, store_instances=bool(getattr(source, "has_instances", False)),
                       shard_tiles=cfg.shard_tiles)


def provenance(source: TileSource, cfg: ExtractConfig, facts: dict, **extra) -> dict:
    """The store's provenance: what ran, on what, with which settings."""
    return {"model": cfg.model, "model_id": facts["model_id"], "weights_sha256": facts["weights_sha256"],
            "source": source.describe(), "extract": cfg.to_dict(), "command": " ".join(sys.argv),
            "torch_version": torch.__version__, "device": cfg.device,
            # CPU features differ in their last bits between thread counts: record it
            "torch_threads": cfg.threads or torch.get_num_threads(), "pathsegdiff_version": __version__, **extra}


def preflight(schema: StoreSchema, n_todo: int, where: str) -> str:
    per = schema.bytes_per_tile()
    line = f"{n_todo} of {schema.n_tiles} tiles to extract, {per / 2**20:.2f} MiB per tile, " \
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
                   progress: bool = True, echo=print, ldm=None) -> ExtractSummary:
    """Fill (or resume) the store at ``store`` with features of every tile of ``source``, in this process.

    ``ldm``: an already-built model to use instead of loading ``cfg.model`` (benchmarks, tests).
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
        model = Model.load(cfg, ldm)
        if model.facts()["warning"]:
            echo(model.facts()["warning"])
        schema = build_schema(source, model.ldm, model.cond, cfg)
        summary = ExtractSummary(store, len(source))
        with open_or_create(store, schema, source.records, provenance(source, cfg, model.facts()),
                            overwrite=cfg.overwrite) as w:
            todo = w.missing()
            summary.already_written = int((w.status() != 0).sum())
            if cfg.limit is not None:
                todo = todo[: cfg.limit]
            echo(preflight(schema, len(todo), store))
            with tqdm(total=len(todo), unit="tile", desc="extract", disable=not progress, smoothing=0.1) as bar:
                extract_tiles(source, todo, w, model, cfg, summary, on_batch=bar.update,
                              on_failed=lambda ids, reasons: log_failures(store, ids, reasons))
    finally:
        torch.set_num_threads(threads_before)
    summary.seconds = time.perf_counter() - t0
    return summary


def extract_tiles(source: TileSource, todo: np.ndarray, w, model: Model, cfg: ExtractConfig,
                  summary: ExtractSummary, on_batch=lambda n: None, on_failed=lambda ids, reasons: None,
                  stop=lambda: False) -> None:
    """Decode, compute and write tiles ``todo`` through the writer ``w``: the loop every run shares.

    ``w.write`` and ``w.mark_failed`` run in a background thread, in order; the
    batches computed before an error, Ctrl-C or ``stop()`` are written before
    this returns or raises.
    """
    loader = DataLoader(_Decode(source, todo), batch_size=cfg.batch_size, num_workers=cfg.decode_workers,
                        collate_fn=_collate, persistent_workers=False)
    writer = _Writer(cfg.queue_batches)
    try:
        for items in loader:
            bad = [(i, err) for i, _, err in items if err is not None]
            if bad:
                ids = w.tile_ids([i for i, _ in bad])
                if not cfg.skip_errors:
                    raise InputError(f"{bad[0][1]} (tile {ids[0]}; --skip-errors records such tiles and goes on)")
                reasons = [f"unreadable: {err}" for _, err in bad]
                summary.failed.update(zip(map(str, ids), reasons))
                writer.put(lambda b=[i for i, _ in bad], r=reasons: w.mark_failed(b, r))
                on_failed(ids, reasons)
            good = [(i, s) for i, s, err in items if err is None]
            if good:
                tm = time.perf_counter()
                batch = _compute(good, w, model, w.schema)
                summary.model_seconds += time.perf_counter() - tm
                writer.put(lambda idx=[i for i, _ in good], b=batch: w.write(idx, b))
                summary.written += len(good)
            on_batch(len(items))
            if stop():
                break
    except BaseException:
        writer.close(raise_error=False)  # finish what was computed, even on Ctrl-C; keep the first error
        raise
    writer.close()


def _compute(good, w, model: Model, schema: StoreSchema) -> TileBatch:
    ids = list(w.tile_ids([i for i, _ in good]))
    rgb = torch.from_numpy(np.stack([s.rgb for _, s in good]))
    with torch.no_grad(), model.autocast:
        ssl = model.cond.embed(rgb, ids)
        feats, z0 = model.extractor(rgb, ids, ssl)
    store_dtype = torch.float16 if schema.features.dtype == "float16" else torch.float32
    # Cast on the device: half the bytes to copy back, and the writer gets final values.
    features = {t: {b: x.to(store_dtype).cpu().numpy() for b, x in d.items()} for t, d in feats.items()}
    batch = TileBatch(features, rgb=rgb.numpy())
    if schema.has_labels:
        batch.labels = np.stack([s.labels if s.labels is not None else
                                 np.full(rgb.shape[2:], schema.ignore_index, np.uint8) for _, s in good])
    if schema.store_instances:
        batch.instances = np.stack([s.instances if s.instances is not None else
                                    np.zeros(rgb.shape[2:], np.int32) for _, s in good])
    if schema.ssl_dim:
        batch.ssl = ssl.float().cpu().numpy()
    if schema.latent_shape:
        batch.latent = z0.float().cpu().numpy()
    return batch
