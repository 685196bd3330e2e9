"""Store I/O benchmark: the feature store against raw .npy files on the same disk.

Prints, side by side and as ratios:
  1. write throughput (tiles/s, MB/s) of each store codec and of one np.save per block per tile;
  2. random single-tile read throughput of the same;
  3. the compression ratio and decode speed of each codec on feature-like float16 data.

Feature-like data: smooth random fields (Gaussian-filtered noise) through SiLU with
per-channel scales, shaped like three decoder blocks of the reference UNet
(576x16x16, 384x32x32, 192x64x64: 2.6 MB of float16 per tile).  Reads are from
the page cache for both sides (this benchmark cannot drop caches), so they
measure decode and file-system overhead, not the disk.

    python bench/store_io.py [--tiles 48] [--reads 96] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store, open_store
from pathsegdiff.store.schema import CODECS

BLOCKS = (BlockSpec("up4", 576, 16, 16), BlockSpec("up7", 384, 32, 32), BlockSpec("up10", 192, 64, 64))


def feature_like(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    out = {}
    for b in BLOCKS:
        x = rng.normal(size=(n, *b.shape)).astype(np.float32)
        x = gaussian_filter(x, sigma=(0, 0, 1.5, 1.5)) * 4
        scale = rng.lognormal(0, 1, size=(1, b.channels, 1, 1)).astype(np.float32)
        x = x * scale
        out[b.name] = (x / (1 + np.exp(-x))).astype(np.float16)  # SiLU: skewed, many near-zero values
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_store(root: Path, codec: str, feats: dict, n: int, reads: np.ndarray) -> dict:
    spec = FeatureSpec("bench", "0" * 64, BLOCKS, (50,), codec=codec, tile_size=256)
    path = root / f"store-{codec}.zarr"
    schema = StoreSchema(spec, n_tiles=n, store_rgb=False)
    records = [TileRecord(f"t{i}") for i in range(n)]
    t0 = time.perf_counter()
    with create_store(path, schema, records) as w:
        for a in range(0, n, 8):
            w.write(range(a, min(a + 8, n)), TileBatch({50: {k: v[a : a + 8] for k, v in feats.items()}}))
    t_write = time.perf_counter() - t0
    fs = open_store(path)
    fs.read_tile(0, extras=False)  # open the arrays once, as a DataLoader worker would
    t0 = time.perf_counter()
    for i in reads:
        fs.read_tile(int(i), extras=False)
    t_read = time.perf_counter() - t0
    return {"write_s": t_write, "read_s": t_read, "bytes": dir_bytes(path)}


def bench_npy(root: Path, feats: dict, n: int, reads: np.ndarray) -> dict:
    path = root / "npy"
    path.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        for k, v in feats.items():
            np.save(path / f"{i}_{k}.npy", v[i])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in reads:
        for k in feats:
            np.load(path / f"{int(i)}_{k}.npy")
    t_read = time.perf_counter() - t0
    return {"write_s": t_write, "read_s": t_read, "bytes": dir_bytes(path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=48)
    ap.add_argument("--reads", type=int, default=96)
    ap.add_argument("--dir", default=None, help="Directory on the disk to measure (default: system temp).")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    feats = feature_like(rng, args.tiles)
    raw = sum(v[0].nbytes for v in feats.values())
    reads = rng.integers(0, args.tiles, args.reads)
    root = Path(tempfile.mkdtemp(prefix="pathsegdiff-bench-", dir=args.dir))
    print(f"{args.tiles} tiles of {raw / 1e6:.2f} MB float16 ({', '.join(f'{b.name} {b.shape}' for b in BLOCKS)}); "
          f"{args.reads} random single-tile reads; disk under {root}")
    try:
        results = {"npy": bench_npy(root, feats, args.tiles, reads)}
        for codec in CODECS:
            results[codec] = bench_store(root, codec, feats, args.tiles, reads)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = results["npy"]
    print(f"\n{'layout':<22}{'write t/s':>10}{'MB/s':>8}{'x npy':>7}{'read t/s':>10}{'MB/s':>8}{'x npy':>7}"
          f"{'ratio':>7}")
    for name, r in results.items():
        wt, rt = args.tiles / r["write_s"], args.reads / r["read_s"]
        label = "raw .npy per block" if name == "npy" else f"store codec={name}"
        print(f"{label:<22}{wt:>10.1f}{wt * raw / 1e6:>8.0f}{base['write_s'] / r['write_s']:>7.2f}"
              f"{rt:>10.1f}{rt * raw / 1e6:>8.0f}{base['read_s'] / r['read_s']:>7.2f}"
              f"{args.tiles * raw / r['bytes']:>7.2f}")
    print("\n'x npy': throughput relative to raw .npy (higher is faster); 'ratio': raw bytes / bytes on disk.")
    if not os.environ.get("CI"):
        err = _bitround_error(feats)
        print(f"bitround7-zstd max relative error on values > 1e-2: {err:.2%}")


def _bitround_error(feats: dict) -> float:
    from numcodecs import BitRound

    worst = 0.0
    for v in feats.values():
        x = v.astype(np.float32)
        y = BitRound(keepbits=7).decode(BitRound(keepbits=7).encode(v)).reshape(v.shape).astype(np.float32)
        m = np.abs(x) > 1e-2
        worst = max(worst, float(np.max(np.abs(x[m] - y[m]) / np.abs(x[m]))))
    return worst


if __name__ == "__main__":
    main()
