"""The extraction job: decode tiles, run the model, write in the background, resume.

The store is created or reopened first (identity checked before any model
work) and only ``todo`` tiles go through the per-tile loop (``loop.py``,
shared with the ranges of a distributed run).  What the status says is
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pathsegdiff import __version__
from pathsegdiff.errors import ConfigError, InputError, StoreWriteError
from pathsegdiff.extract.features import FeatureConfig, block_shapes
from pathsegdiff.extract.loop import DTYPES, Model, extract_tiles
from pathsegdiff.extract.sources import TileSource
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, open_or_create
from pathsegdiff.store.location import is_remote_client_error, redact
from pathsegdiff.store.schema import DEFAULT_CODEC


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


def build_schema(source: TileSource, ldm, cond, cfg: ExtractConfig) -> StoreSchema:
    shapes = block_shapes(ldm, cfg.features, source.tile_size)  # ConfigError names unknown blocks
    f = cfg.features
    spec = FeatureSpec(
        model_id=ldm.model_id, weights_sha256=ldm.weights_sha256, model_config_sha256=ldm.config_sha256,
        blocks=tuple(BlockSpec(b, *shapes[b]) for b in f.blocks), timesteps=f.timesteps, noise_seed=f.seed,
        draws=f.draws, conditioning=cond.name, tile_size=source.tile_size, codec=cfg.codec, compute_dtype=cfg.dtype,
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
        with remote_errors(store), open_or_create(store, schema, source.records,
                                                  provenance(source, cfg, model.facts()), overwrite=cfg.overwrite) as w:
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


