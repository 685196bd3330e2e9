"""``train --coefficients`` against training on decoded features, on the same PCA store.

Builds one labelled store at the reference model's shapes (``up1`` 576x32x32 +
``up2`` 384x64x64 at t = 50 and 150, 256 px tiles) in a PCA preset
(``pca64-int8`` by default; bases fitted on the first tiles, as extraction
fits them on its calibration tiles), then, side by side in one process:

- read tiles/s: every train tile read through ``TileDataset`` (what a
  training step waits on), decoded features against coefficients;
- the fcn head trained both ways (same seed, same tiles, default head size):
  mean training-pass seconds per epoch, the share of it spent waiting on
  data, the whole ``train`` call (validation and test evaluation included,
  which read decoded features in both modes), and the test mIoU.

Features are synthetic: smooth channel-correlated fields (a power-law
spectrum, as in bench/compact.py) plus the one-hot label map pooled to the
block and mixed over channels, through SiLU, so the classes are learnable
and the PCA keeps most of them.  Timings are wall-clock on whatever this
machine is doing; the ratio is the number to read.  BLAS runs one thread
(set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to change it).

    .venv/bin/python bench/coefficients.py [--tiles 48] [--epochs 3] [--preset pca64-int8] [--work /tmp/coef-bench]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path

# One BLAS thread unless told otherwise: on this shared 2-core machine a multi-threaded decode spinning
# against other load read 10x slower (15 tiles/s against 130), which is not what the ratio is about.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import torch
import torch.nn.functional as F

REFERENCE_BLOCKS = (("up1", 576, 32, 32), ("up2", 384, 64, 64))
TIMESTEPS = (50, 150)
TILE, CLASSES = 256, ("a", "b", "c")


def labels_for(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, TILE, TILE) uint8 class blobs: the argmax of a smooth random field per class."""
    coarse = torch.from_numpy(rng.normal(size=(n, len(CLASSES), 4, 4)).astype(np.float32))
    return F.interpolate(coarse, size=(TILE, TILE), mode="bicubic", align_corners=False).argmax(1).numpy().astype(
        np.uint8)


def features_for(labels: np.ndarray, mixes: dict, rng: np.random.Generator) -> dict[int, dict[str, np.ndarray]]:
    """Float16 features of the tiles whose labels are ``labels``: structured noise plus the label signal."""
    from scipy.ndimage import gaussian_filter

    onehot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), len(CLASSES)).permute(0, 3, 1, 2).float()
    out: dict[int, dict[str, np.ndarray]] = {}
    for t in TIMESTEPS:
        out[t] = {}
        for name, c, h, w in REFERENCE_BLOCKS:
            noise_mix, label_mix = mixes[(t, name)]
            fields = gaussian_filter(rng.normal(size=(len(labels), c, h, w)).astype(np.float32), sigma=(0, 0, 1.5, 1.5))
            fields /= fields.std()
            pooled = F.adaptive_avg_pool2d(onehot, (h, w)).numpy()
            x = (np.einsum("ck,nkhw->nchw", noise_mix, fields, optimize=True) * math.sqrt(c) / 4
                 + np.einsum("ck,nkhw->nchw", label_mix, pooled, optimize=True))
            out[t][name] = (x / (1 + np.exp(-x))).astype(np.float16)
    return out


def build_store(path: Path, n: int, preset: str) -> None:
    from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store
    from pathsegdiff.store.encodings import Calibration, bases_sha256, fit_bases, parse_preset

    enc = parse_preset(preset)
    if not enc.uses_pca:
        raise SystemExit(f"--preset {preset}: --coefficients needs a PCA preset (pcaK or pcaK-int8)")
    rng = np.random.default_rng(0)
    mixes = {}
    for t in TIMESTEPS:
        for name, c, *_ in REFERENCE_BLOCKS:
            q, _ = np.linalg.qr(rng.normal(size=(c, c)))
            mixes[(t, name)] = ((q * (1.0 / np.arange(1, c + 1))).astype(np.float32) * 4,
                                rng.normal(size=(c, len(CLASSES))).astype(np.float32))
    labels = labels_for(rng, n)
    batch = 8
    first = features_for(labels[:batch], mixes, rng)  # the calibration tiles, then written first
    bases = fit_bases({(t, b): x for t, d in first.items() for b, x in d.items()}, enc.components, Calibration())
    spec = FeatureSpec("bench-coefficients", "0" * 64, tuple(BlockSpec(*b) for b in REFERENCE_BLOCKS), TIMESTEPS,
                       tile_size=TILE, encoding=enc.name, basis_sha256=bases_sha256(bases))
    n_test = n_val = max(2, n // 6)
    splits = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    records = [TileRecord(f"t{i:04d}", f"S{i % 6}", 0, 0, 0.5, splits[i]) for i in range(n)]
    schema = StoreSchema(spec, n_tiles=n, class_names=CLASSES, store_rgb=False)
    with create_store(path, schema, records, overwrite=True, bases=bases) as w:
        for a in range(0, n, batch):
            feats = first if a == 0 else features_for(labels[a : a + batch], mixes, rng)
            w.write(range(a, min(a + batch, n)), TileBatch(feats, labels=labels[a : a + batch]))


def read_rate(store: str, coefficients: bool) -> float:
    """Train tiles/s through the trainer's dataset (one warm-up read, not timed)."""
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.data import TileDataset

    fs = open_store(store)
    train = np.flatnonzero(np.asarray(fs.table()["split"]) == "train")
    ds = TileDataset(store, train, fs.blocks, fs.timesteps, coefficients=coefficients)
    ds[0]
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - t0)


def train_row(store: str, run_dir: Path, coefficients: bool, epochs: int) -> dict:
    import json

    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    config = TrainConfig(head="fcn", epochs=epochs, patience=epochs, coefficients=coefficients)
    t0 = time.perf_counter()
    r = train(store, run_dir, config, overwrite=True, progress=False, plots=False)
    total = time.perf_counter() - t0
    history = json.loads((run_dir / r["best_run"] / "history.json").read_text())
    epoch_s = [h["data_s"] + h["compute_s"] for h in history]
    return {"epoch_s": float(np.mean(epoch_s)), "wait": sum(h["data_s"] for h in history) / sum(epoch_s),
            "total_s": total, "miou": r["miou"], "epochs": len(history), "n_train": r["n_train_tiles"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=48)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--preset", default="pca64-int8")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--work", default="/tmp/coef-bench")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"ref-{a.preset}.zarr"
    t0 = time.perf_counter()
    build_store(store, a.tiles, a.preset)
    print(f"built {store} ({a.tiles} tiles, {a.preset}) in {time.perf_counter() - t0:.0f} s")
    rows = {}
    for mode, coef in (("decoded features", False), ("coefficients", True)):
        rows[mode] = {"read": read_rate(str(store), coef), **train_row(str(store), work / f"run-{coef}", coef,
                                                                         a.epochs)}
    ref = rows["decoded features"]
    print(f"\nfcn head on {a.preset} (up1 576x32x32 + up2 384x64x64, t = 50, 150), {ref['n_train']} train tiles, "
          f"{a.epochs} epochs, {a.threads} torch thread(s)\n")
    print("| trained on | read tiles/s | ratio | epoch s (train pass) | ratio | data wait | whole run s | test mIoU |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['read']:.1f} | {r['read'] / ref['read']:.2f}x | {r['epoch_s']:.2f} | "
              f"{ref['epoch_s'] / r['epoch_s']:.2f}x | {r['wait']:.0%} | {r['total_s']:.1f} | {r['miou']:.3f} |")
    print("\nratios: against decoded features (read: higher is faster; epoch: speed-up). Evaluation reads decoded "
          "features in both modes (the saved head is composed onto them).")
    shutil.rmtree(store)


if __name__ == "__main__":
    main()
