"""Numerics of reduced-precision extraction: features and a trained head's mIoU against fp32.

The same real H&E tiles (the tissue of tests/data/cmu_small_region.svs, with
the demo's stain-derived labels and spatial-block splits) are extracted once
in fp32 and once per ``--dtypes`` entry (autocast), each into its own store
(which holds float16 whatever the compute dtype).  Printed:

  - per timestep and block, the relative error ||x - x_fp32|| / ||x_fp32||
    over all tiles, and the largest per-tile relative error; for scale, the
    error of the float16 storage itself (fp32 features recomputed for a few
    tiles and compared with what the fp32 store holds);
  - an ``fcn`` head trained on each store with the same seed and epochs,
    evaluated on the test tiles of its own store, and the fp32 head
    evaluated on each reduced-precision store (the question a user has:
    can a head trained on one run's features read another's?).

Run from the repository root with the project's virtual environment:

    .venv/bin/python bench/numerics.py                         # tiny model, CPU: bf16 against fp32
    .venv/bin/python bench/numerics.py --dtypes bf16,fp16 --epochs 15
    .venv/bin/python bench/numerics.py --model reference --device cuda --dtypes bf16   # on a GPU
    .venv/bin/python bench/numerics.py --tiles 24 --epochs 1   # quickest: a smoke run

Extraction is ``run_extraction`` (so ``pathsegdiff.extract.featurize.Featurizer``)
and the fp32 recomputation for the storage error is the same ``Featurizer``.

On the CPU autocast in bf16 is slower than fp32 (bench/extract.py): this
measures accuracy, not speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workload import DATA, BenchTiles, build_backbone  # bench/workload.py, beside this file


def stain_source(tile_size: int, stride: int, limit: int | None):
    from pathsegdiff.tiles.stain_labels import StainLabelledSource
    from pathsegdiff.tiles.wsi import SlideSource

    source = StainLabelledSource(SlideSource(DATA / "cmu_small_region.svs", tile_size=tile_size, stride=stride,
                                             target_mpp=0.5, min_tissue=0.25))
    if limit is not None and limit < len(source):  # tiles evenly over the slide, so every split keeps some
        picks = np.linspace(0, len(source) - 1, limit).round().astype(int)
        source = BenchTiles([source], [(0, int(i)) for i in picks], tile_size)
    return source


def rel_errors(store_a, store_b) -> dict[tuple[int, str], tuple[float, float]]:
    """(timestep, block) -> (relative error over all tiles, largest per-tile relative error) of b against a."""
    out = {}
    for t in store_a.timesteps:
        for b in store_a.blocks:
            a = store_a.read_features(slice(None), t, b).astype(np.float64)
            x = store_b.read_features(slice(None), t, b).astype(np.float64)
            per_tile = np.linalg.norm((x - a).reshape(len(a), -1), axis=1) / np.linalg.norm(a.reshape(len(a), -1), axis=1)
            out[t, b] = (float(np.linalg.norm(x - a) / np.linalg.norm(a)), float(per_tile.max()))
    return out


def storage_errors(backbone, source, store, feats_cfg, n: int) -> dict[tuple[int, str], float]:
    """Relative error of the float16 store against fp32 features recomputed for the first ``n`` tiles."""
    from pathsegdiff.extract.featurize import Featurizer

    ids = [r.tile_id for r in source.records[:n]]
    rgb = torch.from_numpy(np.stack([source.load(i).rgb for i in range(n)]))
    feats = Featurizer(backbone, feats_cfg, compute_dtype="fp32")(rgb, ids).features
    out = {}
    for t, blocks in feats.items():
        for b, x in blocks.items():
            x = x.double().cpu().numpy()
            s = store.read_features(slice(0, n), t, b).astype(np.float64)
            out[t, b] = float(np.linalg.norm(s - x) / np.linalg.norm(x))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("tiny", "reference"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default="bf16", help="comma-separated reduced-precision compute dtypes")
    p.add_argument("--tiles", type=int, default=None, help="at most this many tiles (default: all at --stride)")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--timesteps", default="50,150")
    p.add_argument("--blocks", default="up1,up2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dir", default=None)
    args = p.parse_args()

    from pathsegdiff.extract.featurize import FeatureConfig
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.evaluate import evaluate_run
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [d for d in args.dtypes.split(",") if d and d != "fp32"]
    feats = FeatureConfig(blocks=tuple(args.blocks.split(",")), timesteps=tuple(int(t) for t in args.timesteps.split(",")))
    source = stain_source(args.tile_size, args.stride, args.tiles)
    splits = {s: sum(r.split == s for r in source.records) for s in ("train", "val", "test")}
    print(f"{len(source)} tiles of {DATA / 'cmu_small_region.svs'} ({splits}), model {args.model}, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    backbone = build_backbone(args.model, args.device)
    work = Path(tempfile.mkdtemp(prefix="numerics-", dir=args.dir))
    stores, seconds = {}, {}
    for dtype in ["fp32", *dtypes]:
        t = time.perf_counter()
        cfg = ExtractConfig(model=args.model, features=feats, device=args.device, dtype=dtype)
        run_extraction(source, work / f"{dtype}.zarr", cfg, progress=False, echo=lambda m: None, backbone=backbone)
        seconds[dtype] = time.perf_counter() - t
        stores[dtype] = open_store(work / f"{dtype}.zarr")
    print("extraction seconds: " + ", ".join(f"{d} {s:.1f}" for d, s in seconds.items()))

    storage = storage_errors(backbone, source, stores["fp32"], feats, n=min(4, len(source)))
    print("\nrelative error against fp32 (all tiles; max per tile)")
    print(f"{'timestep':>8} {'block':>6} {'float16 storage':>16} " + " ".join(f"{d:>22}" for d in dtypes))
    errs = {d: rel_errors(stores["fp32"], stores[d]) for d in dtypes}
    for key, s in storage.items():
        cols = " ".join(f"{errs[d][key][0]:>10.2e} ({errs[d][key][1]:.2e})" for d in dtypes)
        print(f"{key[0]:>8} {key[1]:>6} {s:>16.2e} {cols}")

    print(f"\nfcn head, {args.epochs} epochs, seed 0, test split mIoU")
    print(f"{'features':>9} {'own store':>10} {'fp32 head on it':>16}")
    for dtype in ["fp32", *dtypes]:
        res = train(str(work / f"{dtype}.zarr"), work / f"run-{dtype}", TrainConfig(head="fcn", epochs=args.epochs),
                    progress=False, plots=False)
        cross = evaluate_run(work / "run-fp32", str(work / f"{dtype}.zarr"), plots=False)
        own = res["miou"]["mean"] if isinstance(res["miou"], dict) else res["miou"]
        print(f"{dtype:>9} {own:>10.4f} {cross['miou']:>16.4f}")
    print(f"\nstores and runs in {work}")


if __name__ == "__main__":
    main()
