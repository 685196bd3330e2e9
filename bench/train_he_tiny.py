"""The fixed recipe of the shipped ``he-tiny`` model: ``pretrain`` on the bundled CC0 slide, CPU, ~60-90 min.

Data: ``tests/data/cmu_small_region.svs`` (H&E skin, 0.499 um/px, CC0) read as
a slide source at two magnifications (0.5 and 1.0 um/px), 256 px tiles every
128 px with at least 25 % tissue.  Every tile whose level-0 footprint touches
a tile the demo holds out for testing is dropped before decoding: the demo's
test tiles are rebuilt exactly as ``pathsegdiff demo`` builds them
(``StainLabelledSource(SlideSource(...))`` with ``DemoConfig``'s tile size,
stride and tissue threshold: spatial blocks of 512 px ranked by a hash), so
no training crop holds a pixel of a test tile.  The dropped regions and the
tile counts go to ``OUT/exclusion.json``.

Training: the ``tiny`` architecture (VQ-f4 with 3 latent channels, a 4-level
cross-attention UNet, SSL projection with 2 context tokens), 128 px random
crops (32x32 latents), flips, 90-degree rotations and mild colour jitter,
``--conditioning null`` (no HIPT weights here; the projection of zeros, with
condition dropout as the reference).  Step counts were sized from measured
CPU rates (see docs/he-tiny.md) as caps, and each stage also has a budget of
training time (20 min autoencoder, 60 min UNet, summed over resumed calls)
that ends it early on a busy machine; the card records the steps reached.
Rerunning the same command resumes from the last checkpoint (every 250 steps).

    .venv/bin/python bench/train_he_tiny.py [-o he_tiny_out] [--ae-steps N] [--unet-steps N] [--ae-minutes M] [--unet-minutes M] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from pathsegdiff.demo import REPO_SLIDE, DemoConfig
from pathsegdiff.extract.pretrain import PretrainConfig, StageConfig, load_tiles, pretrain
from pathsegdiff.tiles.stain_labels import StainLabelledSource
from pathsegdiff.tiles.wsi import SlideSource

MPPS = (0.5, 1.0)
TILE, STRIDE, MIN_TISSUE = 256, 128, 0.25
AE_STEPS, UNET_STEPS = 2000, 6000  # caps; the time budgets below usually end the stages first
AE_MINUTES, UNET_MINUTES = 20.0, 60.0  # training time per stage (summed over resumed calls)
CHECKPOINT_EVERY = 250


def recipe(ae_steps: int = AE_STEPS, unet_steps: int = UNET_STEPS, threads: int | None = 1) -> PretrainConfig:
    return PretrainConfig(
        autoencoder=StageConfig(steps=ae_steps, batch_size=8, lr=4e-4, warmup=100, ema_decay=0.995,
                                checkpoint_every=CHECKPOINT_EVERY),
        unet=StageConfig(steps=unet_steps, batch_size=16, lr=2e-4, warmup=200, ema_decay=0.999,
                         checkpoint_every=CHECKPOINT_EVERY),
        crop=128, conditioning="null", seed=0, device="cpu", threads=threads)


def demo_test_boxes(slide: Path = REPO_SLIDE) -> list[tuple[float, float, float, float]]:
    """Level-0 (x0, y0, x1, y1) of every tile the demo holds out for testing."""
    demo = DemoConfig()
    source = StainLabelledSource(SlideSource(slide, tile_size=demo.tile_size, stride=demo.stride, target_mpp=0.5,
                                             min_tissue=demo.min_tissue))
    fp = source.inner.footprint
    return [(r.x, r.y, r.x + fp, r.y + fp) for r in source.records if r.split == "test"]


def training_sources(slide: Path, boxes) -> tuple[list[SlideSource], dict]:
    """Slide sources at each magnification, keeping only tiles clear of every test box."""
    sources, counts = [], {}
    for mpp in MPPS:
        src = SlideSource(slide, tile_size=TILE, stride=STRIDE, target_mpp=mpp, min_tissue=MIN_TISSUE)
        fp = src.footprint

        def clear(r, fp=fp) -> bool:
            return all(r.x + fp <= x0 or r.x >= x1 or r.y + fp <= y0 or r.y >= y1 for x0, y0, x1, y1 in boxes)

        before = len(src.records)
        src.records = [r for r in src.records if clear(r)]
        counts[str(mpp)] = {"tiles": before, "kept": len(src.records), "footprint_level0": fp}
        sources.append(src)
    return sources, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="he_tiny_out")
    p.add_argument("--ae-steps", type=int, default=AE_STEPS)
    p.add_argument("--unet-steps", type=int, default=UNET_STEPS)
    p.add_argument("--ae-minutes", type=float, default=AE_MINUTES, help="autoencoder time budget")
    p.add_argument("--unet-minutes", type=float, default=UNET_MINUTES, help="UNet time budget")
    p.add_argument("--threads", type=int, default=1, help="1: robust on a shared 2-core machine (see docs/he-tiny.md)")
    p.add_argument("--stop-after", type=int, default=None, help="stop each call after N steps (for trying the recipe)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out)
    (out / "training").mkdir(parents=True, exist_ok=True)  # marks a pretrain output (pretrain resumes into it)
    logging.basicConfig(filename=out / "train.log", level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("he-tiny")

    def echo(msg: str) -> None:
        log.info(msg)
        print(msg, flush=True)

    torch.set_num_threads(a.threads)
    boxes = demo_test_boxes()
    sources, counts = training_sources(REPO_SLIDE, boxes)
    bank = load_tiles(sources)
    for described, mpp in zip(bank.sources, MPPS):  # the model card lists what was excluded
        described["excluded"] = f"tiles touching the demo's {len(boxes)} test tiles ({counts[str(mpp)]})"
    exclusion = {"rule": "drop every tile whose level-0 footprint intersects a demo test tile",
                 "demo_test_tiles_level0": boxes, "per_mpp": counts, "tiles_used": len(bank)}
    (out / "exclusion.json").write_text(json.dumps(exclusion, indent=2) + "\n")
    echo(f"he-tiny: {len(boxes)} demo test tiles excluded; tiles per mpp {json.dumps(counts)}; {len(bank)} used")
    cfg = recipe(a.ae_steps, a.unet_steps, a.threads)
    echo(f"config: {json.dumps(cfg.to_dict())}")
    t0 = time.perf_counter()
    result = pretrain(cfg, bank, out, command=" ".join([sys.executable, *sys.argv]), progress=not a.no_progress,
                      stop_after=a.stop_after, budget_minutes={"autoencoder": a.ae_minutes, "unet": a.unet_minutes},
                      echo=echo)
    echo(f"done in {time.perf_counter() - t0:.0f} s this call: steps {result.steps}, final losses "
         f"{ {k: round(v, 5) for k, v in result.final_loss.items()} }, wall {result.wall_s}, finished {result.finished}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
