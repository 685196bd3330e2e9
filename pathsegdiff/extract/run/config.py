"""What an extraction run is asked to do (saved in the store's provenance) and what it did."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from pathsegdiff.errors import ConfigError
from pathsegdiff.extract.featurize import COMPUTE_DTYPES, FeatureConfig
from pathsegdiff.store.encodings import DEFAULT_PRESET, parse_preset
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
    compile: bool = False  # torch.compile (inductor), channels-last inputs; eager with one warning line if it fails
    queue_batches: int = 4  # computed batches waiting for the writer
    compact: str = DEFAULT_PRESET  # the store's encoding: float16, int8, pcaK or pcaK-int8 (store/encodings/)
    calibration_tiles: int = 32  # a PCA preset's bases are fitted on this many tiles spread over the slides

    def __post_init__(self) -> None:
        if self.dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.dtype!r}")
        if self.decode_workers is None:  # decoding in-process beats competing with the model for 2 cores
            cores = os.cpu_count() or 1
            object.__setattr__(self, "decode_workers", 0 if cores <= 2 else min(4, cores // 2))
        if self.batch_size < 1 or self.decode_workers < 0 or (self.limit is not None and self.limit < 0):
            raise ConfigError("batch size must be >= 1, decode workers >= 0 and limit >= 0")
        if (self.threads is not None and self.threads < 1) or self.shard_tiles < 1:
            raise ConfigError("--threads and --shard-tiles must be >= 1")
        object.__setattr__(self, "compact", parse_preset(self.compact).name)  # refuses an unknown preset
        if self.calibration_tiles < 1:
            raise ConfigError(f"--calibration-tiles must be >= 1, got {self.calibration_tiles}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        return d


@dataclass
class ExtractSummary:
    store: str
    total: int
    written: int = 0
    already_written: int = 0  # written by an earlier run
    already_failed: int = 0  # recorded unreadable by an earlier run (--skip-errors)
    appended: int = 0  # tiles a larger source added to an existing store
    failed: dict[str, str] = field(default_factory=dict)  # tile id -> reason
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        grown = f" ({self.appended} appended to the store)" if self.appended else ""
        before = f" ({self.already_failed} failed before)" if self.already_failed else ""
        return (f"{self.written} tiles written{grown}, {self.already_written} already written{before}, "
                f"{len(self.failed)} failed, "
                f"{self.seconds:.1f} s, {self.tiles_per_s:.2f} tiles/s -> {self.store}")
