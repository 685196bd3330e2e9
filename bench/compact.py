"""Compact feature stores: bytes per tile against speed, reconstruction error and segmentation quality.

Prints a table per part, a row per preset (float16 first, the reference):

- at the reference model's shapes (``up1`` 576x32x32 + ``up2`` 384x64x64 at
  t = 50 and 150, docs/architecture.md), on synthetic feature-like data: feature bytes
  per tile and the ratio to float16, write and random-read tiles/s through
  the store (encoding and decoding included), and the per-block relative
  reconstruction error ||x - decoded|| / ||x||; that error depends on the
  synthetic channel spectrum, so it says little about a real model;
- with ``--quality``, the demo stores (bench/compact_quality.py): for he-tiny and the seeded tiny model
  on the demo's tiles, each preset's bytes per tile and ratio to float16, the relative error of the
  features read back, and the fcn head's test mIoU (the demo's 15 epochs, 3 seeds) with its delta to
  float16 (``pathsegdiff compare``); ``--plot`` draws bytes against mIoU loss; and the PCA spectrum of
  the same stores (bench/pca_spectrum.py: K for 90/95/99 % of the variance, ``--spectrum-plot``).

    python bench/compact.py                       # reference shapes only: bytes, speed, error
    python bench/compact.py --quality --store he-tiny=/tmp/demo_he/features.zarr \\
        --store tiny=/tmp/quality/demo_tiny/features.zarr --work /tmp/quality \\
        [--no-reference] [--plot PNG] [--spectrum-plot PNG]

Without ``--store``, ``--quality`` extracts the demo's tiles with both models into ``--work`` first.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from compact_quality import QUALITY_PRESETS, QUALITY_TRAINED, feature_bytes, quality  # beside this file

REFERENCE_BLOCKS = (("up1", 576, 32, 32), ("up2", 384, 64, 64))
TIMESTEPS = (50, 150)
PRESETS = ("float16", "int8", "pca128-int8", "pca64", "pca64-int8", "pca32-int8", "pca16", "pca16-int8",
           "pca8", "pca8-int8", "pca4-int8")


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


# -- the table ---------------------------------------------------------------------------------------
def table(rows: dict[str, dict], ref_float16: float) -> str:
    head = "| preset | bytes/tile | ratio | write tiles/s | read tiles/s | rel. error up1 / up2 (synthetic) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for preset, r in rows.items():
        err = " / ".join(f"{r['ref_error'][b]:.4f}" for b, *_ in REFERENCE_BLOCKS)
        cells = [preset, f"{r['ref_bytes'] / 2**20:.3f} MiB", f"{ref_float16 / r['ref_bytes']:.1f}x",
                 f"{r['ref_write']:.1f}", f"{r['ref_read']:.1f}", err]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/compact-bench", help="where the stores and runs go")
    p.add_argument("--presets", default=",".join(PRESETS), help="presets at the reference shapes")
    p.add_argument("--ref-tiles", type=int, default=24)
    p.add_argument("--reads", type=int, default=48)
    p.add_argument("--no-reference", action="store_true", help="skip the reference shapes (with --quality)")
    p.add_argument("--quality", action="store_true",
                   help="also the demo stores: store compact to each preset, train fcn, compare (slow)")
    p.add_argument("--store", action="append", default=[], help="--quality: NAME=STORE, a demo store (repeat)")
    p.add_argument("--quality-presets", default=",".join(QUALITY_PRESETS),
                   help="--quality: presets measured (bytes, error); pcaK only where a block has more channels")
    p.add_argument("--trained", default=",".join(QUALITY_TRAINED), help="--quality: presets whose fcn is trained")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15, help="the demo's 15")
    p.add_argument("--plot", help="--quality: draw the ratio against the mIoU delta into this PNG")
    p.add_argument("--spectrum-plot", help="--quality: draw the stores' PCA spectra into this PNG")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    echo = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731  progress on stderr, the table on stdout
    t_start = time.perf_counter()
    if not (a.no_reference and a.quality):
        feats = synthetic_features(a.ref_tiles)
        reads = np.random.default_rng(1).integers(0, a.ref_tiles, a.reads)
        rows = {}
        for preset in a.presets.split(","):
            rows[preset] = reference_row(work, preset, feats, reads)
            echo(f"reference shapes, {preset}: {rows[preset]['ref_bytes'] / 2**20:.3f} MiB/tile, "
                 f"write {rows[preset]['ref_write']:.1f} tiles/s, read {rows[preset]['ref_read']:.1f} tiles/s")
        del feats
        print(f"# Compact stores at the reference shapes ({time.perf_counter() - t_start:.0f} s; "
              f"{os.cpu_count()} cores; {a.ref_tiles} synthetic tiles, {a.reads} random reads)\n")
        print(table(rows, rows["float16"]["ref_bytes"]))
    if a.quality:
        stores = dict(s.split("=", 1) for s in a.store)
        text = quality(stores, a.quality_presets.split(","), a.trained.split(","), work, a.epochs, a.seeds, echo,
                       a.plot, a.spectrum_plot)
        print(f"\n# Compact presets on the demo stores ({time.perf_counter() - t_start:.0f} s in all; fcn, "
              f"{a.epochs} epochs, {a.seeds} seeds, test split; Δ = preset - float16 in points, ± the sd of the "
              "per-seed differences)\n")
        print(text)


if __name__ == "__main__":
    main()
