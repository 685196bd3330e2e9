"""Compact feature stores: bytes per tile against speed, reconstruction error and segmentation quality.

Prints one table, a row per preset (float16 first, the reference):

- at the reference model's shapes (``up1`` 576x32x32 + ``up2`` 384x64x64 at
  t = 50 and 150, docs/architecture.md), on synthetic feature-like data: feature bytes
  per tile and the ratio to float16, write and random-read tiles/s through
  the store (encoding and decoding included), and the per-block relative
  reconstruction error ||x - decoded|| / ||x||; that error depends on the
  synthetic channel spectrum, so it says little about a real model;
- on the demo slide with the tiny model (seeded weights, NOT trained; labels
  stain-derived): feature bytes per tile, the per-block relative error of
  the features read back, and the test mIoU of the ``fcn`` and ``linear``
  heads over several seeds (mean ± sd) with the delta to float16 (paired by
  seed, ``pathsegdiff compare``).

The demo side runs only with ``--quality`` (slow on a small machine: an
extraction, a ``store compact`` per preset and 2 x seeds trainings per
trained preset).  The demo's float16 store is extracted once into ``--work``
and reused on a rerun (delete it to re-extract); every compact store is made
from it with ``store compact``, as a user would.

    python bench/compact.py                       # reference shapes only: bytes, speed, error
    python bench/compact.py --quality [--work /tmp/compact-bench] [--stride 128] [--seeds 3] [--epochs 8]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REFERENCE_BLOCKS = (("up1", 576, 32, 32), ("up2", 384, 64, 64))
TIMESTEPS = (50, 150)
PRESETS = ("float16", "int8", "pca128-int8", "pca64", "pca64-int8", "pca32-int8", "pca16", "pca16-int8",
           "pca8", "pca8-int8", "pca4-int8")
TRAINED = ("float16", "int8", "pca64", "pca64-int8", "pca32-int8", "pca16-int8", "pca8-int8", "pca4-int8")
GOAL_RATIO, GOAL_POINTS = 8.0, 0.5


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def feature_bytes(store: Path) -> int:
    """Bytes on disk of the features and what decoding them needs (scale/offset, PCA bases)."""
    return sum(dir_bytes(store / g) for g in ("features", "pca"))


# -- reference shapes, synthetic features ---------------------------------------------------------
def synthetic_features(n: int, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """Feature-like float16 maps: smooth fields mixed over channels with a power-law spectrum (singular
    values ~ 1/k, as correlated channels give), through SiLU; different per timestep."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, np.ndarray]] = {}
    for t in TIMESTEPS:
        out[t] = {}
        for name, c, h, w in REFERENCE_BLOCKS:
            q, _ = np.linalg.qr(rng.normal(size=(c, c)))
            mix = (q * (1.0 / np.arange(1, c + 1))).astype(np.float32) * 4
            fields = gaussian_filter(rng.normal(size=(n, c, h, w)).astype(np.float32), sigma=(0, 0, 1.5, 1.5))
            fields /= fields.std()
            x = np.einsum("ck,nkhw->nchw", mix, fields, optimize=True) * math.sqrt(c) / 4
            out[t][name] = (x / (1 + np.exp(-x))).astype(np.float16)
    return out


def reference_row(work: Path, preset: str, feats: dict, reads: np.ndarray) -> dict:
    from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store, open_store
    from pathsegdiff.store.encodings import Calibration, bases_sha256, fit_bases, parse_preset, relative_error

    enc = parse_preset(preset)
    n = len(next(iter(feats[TIMESTEPS[0]].values())))
    bases, basis_hash = None, ""
    t0 = time.perf_counter()
    if enc.uses_pca:  # fitted on a sample of the tiles, as extraction does on its calibration tiles
        sample = {(t, b): x[: max(4, n // 3)] for t, d in feats.items() for b, x in d.items()}
        bases = fit_bases(sample, enc.components, Calibration())
        basis_hash = bases_sha256(bases)
    fit_s = time.perf_counter() - t0
    spec = FeatureSpec("bench-reference", "0" * 64, tuple(BlockSpec(*b) for b in REFERENCE_BLOCKS), TIMESTEPS,
                       encoding=enc.name, basis_sha256=basis_hash)
    path = work / f"ref-{preset}.zarr"
    t0 = time.perf_counter()
    with create_store(path, StoreSchema(spec, n_tiles=n, store_rgb=False), [TileRecord(f"t{i}") for i in range(n)],
                      overwrite=True, bases=bases) as w:
        for a in range(0, n, 8):
            w.write(range(a, min(a + 8, n)), TileBatch({t: {b: x[a : a + 8] for b, x in d.items()}
                                                        for t, d in feats.items()}))
    write_s = time.perf_counter() - t0
    fs = open_store(path)
    fs.read_tile(0, extras=False)
    t0 = time.perf_counter()
    for i in reads:
        fs.read_tile(int(i), extras=False)
    read_s = time.perf_counter() - t0
    errors = {b: float(np.mean([relative_error(feats[t][b], np.stack([fs.read_features(i, t, b) for i in range(n)]))
                                for t in TIMESTEPS])) for b, *_ in REFERENCE_BLOCKS}
    row = {"ref_bytes": feature_bytes(path) / n, "ref_write": n / write_s, "ref_read": len(reads) / read_s,
           "ref_fit_s": fit_s, "ref_error": errors}
    shutil.rmtree(path)
    return row


# -- the demo slide, tiny model -----------------------------------------------------------------------
def demo_float16_store(work: Path, stride: int, echo) -> Path:
    from pathsegdiff.demo import REPO_SLIDE
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.tiles.stain_labels import StainLabelledSource
    from pathsegdiff.tiles.wsi import SlideSource

    path = work / f"demo-stride{stride}-float16.zarr"
    if (path / "zarr.json").is_file():
        echo(f"reusing {path} (delete it to extract again)")
        return path
    source = StainLabelledSource(SlideSource(REPO_SLIDE, tile_size=256, stride=stride, target_mpp=0.5,
                                             min_tissue=0.25))
    echo(f"extracting {len(source)} demo tiles (stride {stride}) with the tiny model into {path}")
    summary = run_extraction(source, path, ExtractConfig(model="tiny", threads=1, overwrite=True), progress=False,
                             echo=lambda m: None)
    echo("  " + summary.line())
    return path


def demo_row(work: Path, float16: Path, preset: str) -> dict:
    from pathsegdiff.store import open_store
    from pathsegdiff.store.commands.compact import compact_store
    from pathsegdiff.store.encodings import relative_error

    src = open_store(float16)
    idx = src.written()
    if preset == "float16":
        path, seconds = float16, float("nan")
    else:
        path = work / f"{float16.stem.removesuffix('-float16')}-{preset}.zarr"
        t0 = time.perf_counter()
        compact_store(str(float16), str(path), preset, overwrite=True, progress=False)
        seconds = time.perf_counter() - t0
    fs = open_store(path)
    errors = {b: float(np.mean([relative_error(np.stack([src.read_features(int(i), t, b) for i in idx]),
                                               np.stack([fs.read_features(int(i), t, b) for i in idx]))
                                for t in src.timesteps])) for b in src.blocks}
    return {"store": str(path), "demo_bytes": feature_bytes(path) / len(idx), "demo_compact": len(idx) / seconds,
            "demo_error": errors, "blocks": list(src.blocks)}


def train_job(store: str, run_dir: str, head: str, seeds: int, epochs: int) -> tuple[str, str]:
    """One head on one store, ``seeds`` runs (in a worker process, one torch thread)."""
    import torch

    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    torch.set_num_threads(1)
    opts = {"hidden_channels": 32, "proj_channels": 32} if head == "fcn" else {}
    train(store, run_dir, TrainConfig(head=head, epochs=epochs, runs=seeds, head_options=opts), overwrite=True,
          progress=False, plots=False)
    return store, run_dir


# -- the table ---------------------------------------------------------------------------------------
def _pm(d, key) -> str:
    return "-" if d is None else f"{d.b if key == 'b' else d.a:.1f} ± {(d.b_std if key == 'b' else d.a_std) or 0:.1f}"


def table(rows: dict[str, dict], ref_float16: float, demo_float16: float) -> str:
    head = ("| preset | ref. bytes/tile | ratio | write tiles/s | read tiles/s | ref. rel. error up1 / up2 "
            "(synthetic) | demo bytes/tile | ratio | demo rel. error | fcn mIoU | Δ fcn | linear mIoU | Δ linear |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for preset, r in rows.items():
        err = " / ".join(f"{r['ref_error'][b]:.4f}" for b, *_ in REFERENCE_BLOCKS)
        derr = " / ".join(f"{v:.4f}" for v in r["demo_error"].values()) if "demo_error" in r else "-"
        cells = [preset, f"{r['ref_bytes'] / 2**20:.3f} MiB", f"{ref_float16 / r['ref_bytes']:.1f}x",
                 f"{r['ref_write']:.1f}", f"{r['ref_read']:.1f}", err,
                 f"{r['demo_bytes'] / 2**10:.0f} KiB" if "demo_bytes" in r else "-",
                 f"{demo_float16 / r['demo_bytes']:.1f}x" if "demo_bytes" in r else "-", derr]
        for head_name in ("fcn", "linear"):
            d = r.get(head_name)
            cells += [_pm(d, "b"), "-" if d is None or preset == "float16" else f"{d.delta:+.2f} ± {d.paired_std or 0:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: dict[str, dict], ref_float16: float, demo_float16: float) -> list[str]:
    """Which presets meet the goal: >= 8x fewer bytes and every head's delta within max(0.5 pt, seed spread)."""
    out = []
    for preset, r in rows.items():
        if preset == "float16" or "fcn" not in r:
            continue
        ratio_ref, ratio_demo = ref_float16 / r["ref_bytes"], demo_float16 / r["demo_bytes"]
        within = all(r[h].within() for h in ("fcn", "linear"))
        out.append(f"{preset}: {ratio_ref:.1f}x (reference shapes), {ratio_demo:.1f}x (demo); mIoU delta "
                   f"{'within' if within else 'NOT within'} max({GOAL_POINTS} pt, seed spread) for fcn and linear"
                   f" -> {'meets' if within and ratio_demo >= GOAL_RATIO else 'misses'} the goal on the demo")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/compact-bench", help="where the stores and runs go")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--trained", default=",".join(TRAINED), help="presets whose heads are trained on the demo")
    p.add_argument("--ref-tiles", type=int, default=24)
    p.add_argument("--reads", type=int, default=48)
    p.add_argument("--stride", type=int, default=128, help="demo tile grid stride (128: 182 tiles, 256: 48)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (one torch thread each)")
    p.add_argument("--quality", action="store_true",
                   help="also the demo slide: extract, store compact to each preset, train fcn and linear, compare")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731  progress on stderr, the table on stdout
    presets = a.presets.split(",")
    trained = [x for x in a.trained.split(",") if x in presets]
    t_start = time.perf_counter()

    feats = synthetic_features(a.ref_tiles)
    reads = np.random.default_rng(1).integers(0, a.ref_tiles, a.reads)
    rows = {}
    for preset in presets:
        rows[preset] = reference_row(work, preset, feats, reads)
        echo(f"reference shapes, {preset}: {rows[preset]['ref_bytes'] / 2**20:.3f} MiB/tile, "
             f"write {rows[preset]['ref_write']:.1f} tiles/s, read {rows[preset]['ref_read']:.1f} tiles/s")
    del feats
    if a.quality:
        quality(a, work, presets, trained, rows, echo)
    ref16 = rows["float16"]["ref_bytes"]
    demo16 = rows["float16"].get("demo_bytes", float("nan"))
    demo = (f"demo slide stride {a.stride}, {len(open_store_written(work / f'demo-stride{a.stride}-float16.zarr'))} "
            f"tiles; {a.seeds} seeds; {a.epochs} epochs; fcn with proj_channels=hidden_channels=32" if a.quality
            else "reference shapes only; --quality adds the demo slide's bytes, errors and mIoU")
    print(f"# Compact stores ({time.perf_counter() - t_start:.0f} s; {os.cpu_count()} cores; {a.ref_tiles} "
          f"synthetic tiles at the reference shapes, {a.reads} random reads; {demo})\n")
    print(table(rows, ref16, demo16))
    if a.quality:
        print()
        print("\n".join(verdicts(rows, ref16, demo16)))
        print("\nmIoU in points (test split), mean ± sd over seeds; Δ = preset - float16, ± the sd of the per-seed "
              "differences. The tiny model's weights are seeded, NOT trained: re-measure quality on a trained model.")


def quality(a, work: Path, presets: list[str], trained: list[str], rows: dict, echo) -> None:
    """The demo slide: one float16 extraction, a ``store compact`` per preset, heads trained per trained preset."""
    from pathsegdiff.train_head.compare import compare_runs

    float16 = demo_float16_store(work, a.stride, echo)
    for preset in presets:
        rows[preset].update(demo_row(work, float16, preset))
        echo(f"demo, {preset}: {rows[preset]['demo_bytes'] / 2**10:.0f} KiB/tile, errors {rows[preset]['demo_error']}")

    jobs = [(rows[p]["store"], str(work / "runs" / f"stride{a.stride}-{p}-{h}"), h, a.seeds, a.epochs)
            for p in trained for h in ("fcn", "linear")]
    with ProcessPoolExecutor(a.jobs) as pool:
        for store, run in pool.map(train_job, *zip(*jobs)):
            echo(f"trained {run}")
    for p in trained:
        for h in ("fcn", "linear"):
            rows[p][h] = compare_runs(work / "runs" / f"stride{a.stride}-float16-{h}",
                                      work / "runs" / f"stride{a.stride}-{p}-{h}", GOAL_POINTS).delta("miou")


def open_store_written(path: Path) -> np.ndarray:
    from pathsegdiff.store import open_store

    return open_store(path).written()


if __name__ == "__main__":
    main()
