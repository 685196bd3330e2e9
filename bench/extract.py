"""Extraction benchmark: the pipeline (``run_extraction``) against a naive loop on the same tiles.

Tiles are real H&E, cut at ``--tile-size`` every ``--stride`` pixels from
tests/data/target_image.png (an image source) and from the tissue of
tests/data/cmu_small_region.svs (a slide source), taken evenly from both.
The model is built once and warmed up on a random tile; then ``--repeat``
rounds each run both contestants, in alternating order, each from fresh
sources with the decode cache emptied (forked workers inherit nothing):

  - ``pipeline``: ``run_extraction`` with DataLoader decode workers, batches,
    the compute dtype asked for, and the background writer into a Zarr store.
    End-to-end tiles/s (store creation and worker start-up included) and the
    share of wall time the model is busy (``model_seconds / seconds``); on a
    GPU, mean utilisation (nvidia-smi sampled every 200 ms).  Then model-only
    tiles/s: the same batches on tiles decoded beforehand.
  - ``naive``: decode in the loop, batch 1, fp32, the same ``Featurizer``
    (pathsegdiff/extract/featurize.py, the one path from tiles to features),
    then one ``np.save`` (float16: the store's bytes) per block per timestep
    per tile, synchronously; no store, no rgb.

Medians over the rounds are printed side by side, with each round's ratio:
on a shared machine single runs vary by 2x.  With ``--profile``, a
synchronous batched loop times each stage (decode, conditioning, VAE encode,
UNet + noise, cast + device to host, store write), so the stages add up to
its wall time; conditioning and the VAE are timed inside the Featurizer's
call (their methods wrapped), the UNet + noise line is the rest of it.  On
the CPU in fp32 the first tile's features are also compared between the
store and the naive files (they should be identical).

Run from the repository root with the project's virtual environment:

    .venv/bin/python bench/extract.py                      # tiny model, CPU, about 1-2 minutes
    .venv/bin/python bench/extract.py --tiles 4 --batch-size 2 --repeat 1   # quickest: a smoke run
    .venv/bin/python bench/extract.py --profile
    .venv/bin/python bench/extract.py --model reference --device cuda --dtype bf16 --batch-size 64 --tiles 1024 --stride 32
    .venv/bin/python bench/extract.py --model reference --tiles 2 --repeat 1   # reference size on the CPU: a smoke run
    .venv/bin/python bench/extract.py --simulate-device 600   # the host side at GPU rate (bench/host_rate.py)

``--simulate-device TILES_PER_S`` replaces the model by a stand-in with the
reference model's output shapes that takes the GPU's time per batch, and runs
bench/host_rate.py: the highest rate the host side sustains, per-stage times
and which stage binds, before and after chunk_io.py, float16 and a compact
stand-in.  ``--tiles``, ``--batch-size``, ``--decode-workers``, ``--stride``,
``--repeat`` and ``--dir`` carry over.

``--model reference`` is ``pathsegdiff.extract.backbones.tiny.build_reference_size``:
random weights in the reference model's shapes (docs/architecture.md), not the real
model.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

# beside this file in bench/
from extract_profile import run_profile
from workload import MODELS, bench_source, build_backbone, sync

CPU_REFERENCE_MAX_TILES = 2  # seconds per tile per timestep on a CPU core (docs/architecture.md, reference costs)


# --- the model and the GPU ------------------------------------------------------------------


def _warm_up(featurizers: dict, tile_size: int, device: str) -> None:
    """Random tiles through the model: kernel selection and allocator growth stay out of the timings."""
    rgb = torch.randint(0, 256, (1, 3, tile_size, tile_size), dtype=torch.uint8)
    for featurizer in featurizers.values():
        featurizer(rgb, ["warm-up"], out_dtype=torch.float16)
    sync(device)


class GpuUtilisation:
    """Mean GPU utilisation from ``nvidia-smi`` sampled every 200 ms while running."""

    def __init__(self, device: str):
        self.samples: list[float] = []
        self.proc = None
        if device.startswith("cuda") and shutil.which("nvidia-smi"):
            index = device.partition(":")[2] or "0"
            self.proc = subprocess.Popen(
                ["nvidia-smi", "-i", index, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()))

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        return float(np.mean(self.samples)) if self.samples else None


# --- the contestants --------------------------------------------------------------------------


def run_pipeline(args, backbone, featurizer, store: Path) -> dict:
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction

    source = bench_source(args.tiles, args.tile_size, args.stride)
    cfg = ExtractConfig(features=featurizer.cfg, batch_size=args.batch_size, device=args.device,
                        dtype=args.dtype, decode_workers=args.decode_workers, overwrite=True)
    gpu = GpuUtilisation(args.device)
    summary = run_extraction(source, store, cfg, progress=False, echo=lambda line: None, backbone=backbone)
    utilisation = gpu.stop()
    if summary.failed or summary.written != len(source):
        raise SystemExit(f"pipeline wrote {summary.written} of {len(source)} tiles; failed: {summary.failed}")
    return {"seconds": summary.seconds, "tiles_per_s": summary.tiles_per_s,
            "model_share": summary.model_seconds / summary.seconds, "gpu_utilisation": utilisation}


def run_model_only(args, featurizer) -> float:
    """Tiles/s of conditioning + VAE + UNet + cast to float16 on tiles decoded beforehand."""
    source = bench_source(args.tiles, args.tile_size, args.stride)
    n = min(len(source), max(2 * args.batch_size, 8))
    rgb = torch.from_numpy(np.stack([source.load(i).rgb for i in range(n)]))
    ids = [r.tile_id for r in source.records[:n]]
    sync(args.device)
    t0 = time.perf_counter()
    for a in range(0, n, args.batch_size):
        featurizer(rgb[a : a + args.batch_size], ids[a : a + args.batch_size], out_dtype=torch.float16)
    sync(args.device)
    return n / (time.perf_counter() - t0)


def run_naive(args, featurizer, out: Path) -> dict:
    source = bench_source(args.tiles, args.tile_size, args.stride)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t0 = time.perf_counter()
    for i, record in enumerate(source.records):
        rgb = torch.from_numpy(source.load(i).rgb[None])
        feats = featurizer(rgb, [record.tile_id], out_dtype=torch.float16).features  # null conditioning, as the pipeline's
        for t, blocks in feats.items():
            for name, x in blocks.items():
                np.save(out / f"{record.tile_id}_t{t}_{name}.npy", x[0].cpu().numpy())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tiles_per_s": len(source) / seconds}


def same_features(work: Path) -> bool:
    from pathsegdiff.store import open_store

    store = open_store(work / "pipeline.zarr")
    tile, tile_id = store.read_tile(0, extras=False), store.record(0).tile_id
    return all(np.array_equal(x, np.load(work / "naive" / f"{tile_id}_t{t}_{b}.npy"))
               for t, d in tile.features.items() for b, x in d.items())


# --- the driver -------------------------------------------------------------------------------


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="tiny")
    p.add_argument("--tiles", type=int, default=32)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--stride", type=int, default=128, help="grid step in px; smaller gives more (overlapping) tiles")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--decode-workers", type=int, default=None,
                   help="pipeline decode workers (default: the job's own, 0 on a 2-core machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="pipeline compute dtype")
    p.add_argument("--timesteps", default="50,150")
    p.add_argument("--blocks", default="up1,up2")
    p.add_argument("--repeat", type=int, default=3, help="rounds of both contestants; medians are printed")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--profile", action="store_true", help="also print wall time by stage")
    p.add_argument("--dir", default=None, help="where the stores and .npy files go (a temporary folder inside)")
    p.add_argument("--simulate-device", type=float, default=None, metavar="TILES_PER_S",
                   help="no model: a stand-in with the reference shapes at this rate (bench/host_rate.py)")
    args = p.parse_args(argv)
    if args.simulate_device is not None:
        return args
    if args.decode_workers is None:
        from pathsegdiff.extract.run.config import ExtractConfig

        args.decode_workers = ExtractConfig().decode_workers
    args.timesteps = tuple(int(t) for t in args.timesteps.split(","))
    args.blocks = tuple(b.strip() for b in args.blocks.split(","))
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; "
                    "run on a GPU machine with a CUDA build of torch, or use --device cpu")
    elif args.model == "reference" and args.tiles > CPU_REFERENCE_MAX_TILES:
        p.error(f"--model reference on the CPU costs seconds per tile per timestep: use --tiles "
                f"{CPU_REFERENCE_MAX_TILES} (a smoke run), or --device cuda")
    if args.tiles < 1 or args.repeat < 1:
        p.error("--tiles and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

    args = _parse(argv)
    if args.simulate_device is not None:
        import host_rate  # bench/host_rate.py, beside this file

        forward = ["--rate", str(args.simulate_device), "--tiles", str(args.tiles), "--batch-size",
                   str(args.batch_size), "--stride", str(min(args.stride, 32)), "--rounds", str(args.repeat)]
        forward += ["--decode-workers", str(args.decode_workers or 0)] + (["--dir", args.dir] if args.dir else [])
        return host_rate.main(forward)
    torch.set_num_threads(args.threads)
    print(f"{args.tiles} tiles of {args.tile_size} px (target_image.png + cmu_small_region.svs), model "
          f"{args.model}, blocks {','.join(args.blocks)}, t {','.join(map(str, args.timesteps))}, device "
          f"{args.device}, {args.threads} torch thread(s), {args.repeat} round(s)", flush=True)
    backbone = build_backbone(args.model, args.device)
    feats = FeatureConfig(blocks=args.blocks, timesteps=args.timesteps)
    # one backbone, a featurizer per compute dtype: the naive loop's fp32 and the pipeline's --dtype
    featurizers = {dtype: Featurizer(backbone, feats, compute_dtype=dtype) for dtype in ("fp32", args.dtype)}
    naive_featurizer, featurizer = featurizers["fp32"], featurizers[args.dtype]
    _warm_up(featurizers, args.tile_size, args.device)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.dir))
    try:
        pipe, naive, model_only = [], [], []
        for r in range(args.repeat):
            if r % 2 == 0:
                pipe.append(run_pipeline(args, backbone, featurizer, work / "pipeline.zarr"))
                naive.append(run_naive(args, naive_featurizer, work / "naive"))
            else:
                naive.append(run_naive(args, naive_featurizer, work / "naive"))
                pipe.append(run_pipeline(args, backbone, featurizer, work / "pipeline.zarr"))
            model_only.append(run_model_only(args, featurizer))
            print(f"round {r + 1}: naive {naive[-1]['tiles_per_s']:.2f}, pipeline {pipe[-1]['tiles_per_s']:.2f} "
                  f"tiles/s ({pipe[-1]['tiles_per_s'] / naive[-1]['tiles_per_s']:.2f}x)", flush=True)
        med = {name: median(p[name] for p in pipe) for name in ("seconds", "tiles_per_s", "model_share")}
        gpu = [p["gpu_utilisation"] for p in pipe if p["gpu_utilisation"] is not None]
        naive_s, naive_rate = median(n["seconds"] for n in naive), median(n["tiles_per_s"] for n in naive)

        print(f"\nmedian of {args.repeat}{'':22}{'naive':>12}{'pipeline':>12}")
        for label, a, b in (("", "batch 1", f"batch {args.batch_size}"), ("", "fp32", args.dtype),
                            ("", "np.save", f"{args.decode_workers} decode workers")):
            print(f"{label:34}{a:>12}{b:>12}")
        print(f"{'wall s':34}{naive_s:>12.2f}{med['seconds']:>12.2f}")
        print(f"{'tiles/s':34}{naive_rate:>12.2f}{med['tiles_per_s']:>12.2f}")
        print(f"pipeline / naive: {med['tiles_per_s'] / naive_rate:.2f}x")
        print(f"model busy: {med['model_share']:.0%} of the pipeline's wall time")
        print(f"model only (tiles decoded beforehand): {median(model_only):.2f} tiles/s; "
              f"end to end {med['tiles_per_s']:.2f} tiles/s")
        if gpu:
            print(f"GPU utilisation during the pipeline: {median(gpu):.0f} % (nvidia-smi, median of the rounds)")
        if args.dtype == "fp32" and not args.device.startswith("cuda"):
            print(f"first tile's features identical in store and .npy: {same_features(work)}")
        if args.profile:
            prof = run_profile(args, featurizer, work / "profile.zarr")
            total = prof["seconds"]
            print(f"\nprofile: synchronous loop, batch {args.batch_size}, {args.dtype}, {prof['tiles']} tiles, "
                  f"{total:.2f} s ({prof['tiles'] / total:.2f} tiles/s)")
            for name, s in prof["stages"].items():
                print(f"  {name:22}{s:8.2f} s {s / total:7.1%}")
            rest = total - sum(prof["stages"].values())
            print(f"  {'(other: store setup)':22}{rest:8.2f} s {rest / total:7.1%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
