"""The benchmarks' workload: real H&E tiles from the bundled data, and the model that extracts them.

``bench_source`` picks ``n`` tiles evenly from tests/data/target_image.png (an
image source) and the tissue of tests/data/cmu_small_region.svs (a slide
source), as one source for ``run_extraction`` (:class:`BenchTiles`, which
also picks tiles of a single labelled source: bench/numerics.py).
``build_backbone`` is the seeded ``tiny`` LDM or random weights in the
reference model's shapes (docs/architecture.md), not the real model.  Used by
bench/extract.py, bench/host_rate.py and bench/numerics.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MODELS = ("tiny", "reference")


class BenchTiles:
    """Picked tiles of several sources, as one source (``records``, ``load``) for ``run_extraction``."""

    kind = "bench"
    has_instances = False

    def __init__(self, parts: list, picks: list[tuple[int, int]], tile_size: int):
        self.parts, self.picks, self.tile_size = parts, picks, tile_size
        self.class_names = tuple(parts[0].class_names)  # labelled parts (bench/numerics.py) keep their labels
        self.records = [parts[k].records[i] for k, i in picks]

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int):
        k, j = self.picks[i]
        return self.parts[k].load(j)

    def describe(self) -> dict:
        return {"kind": self.kind, "n_tiles": len(self), "tile_size": self.tile_size,
                "parts": [p.describe() for p in self.parts]}


def bench_source(n: int, tile_size: int, stride: int) -> BenchTiles:
    """``n`` real H&E tiles, evenly from target_image.png and the slide's tissue, nothing decoded yet."""
    from pathsegdiff.tiles import sources
    from pathsegdiff.tiles.datasets import SourceConfig, open_source

    sources._decoded.cache_clear()  # the image source's per-process decode cache: start cold
    cfg = SourceConfig(tile_size=tile_size, stride=stride)
    parts = [open_source(DATA / "target_image.png", cfg), open_source(DATA / "cmu_small_region.svs", cfg)]
    wanted = [n - n // 2, n // 2]
    if any(want > len(p) for want, p in zip(wanted, parts)):
        raise SystemExit(f"only {len(parts[0])} + {len(parts[1])} tiles at stride {stride}; "
                         f"--tiles {n} needs a smaller --stride")
    picks = [(k, int(i)) for k, (p, want) in enumerate(zip(parts, wanted)) if want
             for i in np.linspace(0, len(p) - 1, want).round()]
    return BenchTiles(parts, picks, tile_size)


def build_backbone(model: str, device: str):
    """The seeded ``tiny`` LDM, or random weights in the reference model's shapes, on ``device``."""
    from pathsegdiff.extract.backbones.tiny import build_reference_size, build_tiny

    return build_tiny().to(device) if model == "tiny" else build_reference_size(device)


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a timer around it measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
