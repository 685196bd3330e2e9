"""Head-training benchmark: training from the store against recomputing features every epoch.

Builds a store of real ``tiny``-model features (up1 64x32x32 + up2 48x64x64 at
t = 50, 150; 256 px tiles of synthetic H&E-coloured blobs), then measures, each
in a fresh child process so peak RSS is its own:

  1. ``store``: the FCN head trained by ``pathsegdiff.train_head`` from the store
     (epoch time of the training pass, share of step time spent waiting on data,
     peak RSS), with 0 and 2 DataLoader workers;
  2. ``recompute``: the same head and the same steps, but each batch's features
     recomputed from the stored RGB with the tiny model (what caching removes);
  3. ``store`` again on a store with 4x the tiles (peak RSS must not grow).

Timings are wall-clock on whatever this machine is doing; the ratio is the
number to read.  The tiny model costs about 0.1 s per tile; the reference
400 M model costs 20-50x more (docs/architecture.md, reference model costs), which this benchmark does not run.

Features come from ``pathsegdiff.extract.featurize.Featurizer`` (the one
path from tiles to features, as ``pathsegdiff extract`` takes) both when the
stores are built and in the recompute loop.  Run from the repository root
with the project's virtual environment:

    .venv/bin/python bench/train_head.py [--tiles 48] [--epochs 2] [--threads 1] [--dir /tmp]
    .venv/bin/python bench/train_head.py --tiles 12 --epochs 1   # quickest: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TIMESTEPS = (50, 150)
BLOCKS = ("up1", "up2")
CLASSES = ("tumor", "stroma", "other")
PALETTE = np.array([[150, 60, 130], [225, 160, 200], [245, 235, 240]], np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_tiles(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blob labels (n, size, size) and H&E-coloured RGB (n, 3, size, size) with texture noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(n, len(CLASSES), 6, 6)).astype(np.float32))
    labels = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").argmax(1).numpy()
    rgb = PALETTE[labels] + rng.normal(0, 18, size=(n, size, size, 3))
    return labels.astype(np.uint8), np.clip(rgb, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


def tiny_featurizer():
    """The tiny model's featurizer: null conditioning, fp32 compute, on the CPU."""
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

    return Featurizer.load("tiny", "null", FeatureConfig(blocks=BLOCKS, timesteps=TIMESTEPS))


def build_stores(root: Path, n: int) -> tuple[str, str, float]:
    """Extract features with the tiny model into a store of n tiles and one of 4n (features repeated)."""
    from pathsegdiff.store import (
        BlockSpec,
        FeatureSpec,
        StoreSchema,
        TileBatch,
        TileRecord,
        create_store,
    )

    featurizer = tiny_featurizer()
    backbone, shapes = featurizer.backbone, featurizer.block_shapes(256)
    spec = FeatureSpec(backbone.model_id, backbone.weights_sha256, tuple(BlockSpec(b, *shapes[b]) for b in BLOCKS),
                       TIMESTEPS, tile_size=256, model_config_sha256=backbone.config_sha256)
    labels, rgb = synthetic_tiles(n, 256)
    feats = {t: {b: [] for b in BLOCKS} for t in TIMESTEPS}
    t0 = time.perf_counter()
    for a in range(0, n, 8):
        ids = [f"t{i}" for i in range(a, min(a + 8, n))]
        f = featurizer(torch.from_numpy(rgb[a : a + 8]), ids, out_dtype=torch.float16).features
        for t in TIMESTEPS:
            for b in BLOCKS:
                feats[t][b].append(f[t][b].cpu().numpy())
    extract_s = time.perf_counter() - t0
    feats = {t: {b: np.concatenate(v) for b, v in d.items()} for t, d in feats.items()}
    paths = []
    for scale in (1, 4):
        m = n * scale
        n_train, n_val = (2 * m) // 3, m // 6
        splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (m - n_train - n_val)
        tiles = [TileRecord(f"t{i}", f"S{i % 6}", 0, 0, 0.5, splits[i]) for i in range(m)]
        path = root / f"store-{m}"
        with create_store(path, StoreSchema(spec, n_tiles=m, class_names=CLASSES), tiles, overwrite=True) as w:
            for rep in range(scale):
                w.write(range(rep * n, (rep + 1) * n), TileBatch(
                    features=feats, labels=labels, rgb=rgb))
        paths.append(str(path))
    return paths[0], paths[1], extract_s / n


def child_store(store: str, epochs: int, workers: int, out: str) -> dict:
    """Train from the store with the library's own loop; time the training passes."""
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    cfg = TrainConfig(epochs=epochs, patience=epochs, loader_workers=workers, augment=False)
    t0 = time.perf_counter()
    train(store, out, cfg, overwrite=True, progress=False, plots=False)
    total = time.perf_counter() - t0
    hist = json.loads((Path(out) / "runs" / "seed_0" / "history.json").read_text())
    steps = [h["data_s"] + h["compute_s"] for h in hist]
    return {"epoch_s": float(np.mean(steps)), "data_share": float(sum(h["data_s"] for h in hist) / sum(steps)),
            "total_s": total, "peak_rss_mib": peak_rss_mib()}


def child_recompute(store: str, epochs: int) -> dict:
    """The same head and steps, features recomputed from the stored RGB every epoch."""
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.checkpoint import build_head
    from pathsegdiff.train_head.fit import TrainConfig, segmentation_loss, to_device
    from pathsegdiff.train_head.heads import HeadConfig
    from pathsegdiff.train_head.splits import read_splits, resolve_selection

    s = open_store(store)
    cfg = TrainConfig()
    blocks, ts = resolve_selection(s, BLOCKS, TIMESTEPS)
    train_idx = read_splits(s).train
    torch.manual_seed(0)
    head = build_head(HeadConfig("fcn", blocks, ts, len(CLASSES), 256))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    featurizer = tiny_featurizer()
    ids = s.tile_ids()
    rng = np.random.default_rng(0)
    times, extract_s = [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(train_idx)
        for a in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[a : a + cfg.batch_size])
            rgb = torch.from_numpy(np.stack([s.read_rgb(int(i)) for i in idx]))
            labels = torch.from_numpy(np.stack([s.read_labels(int(i)) for i in idx]).astype(np.int64))
            t1 = time.perf_counter()
            feats = featurizer(rgb, [str(ids[i]) for i in idx], out_dtype=torch.float16).features
            extract_s += time.perf_counter() - t1
            feats = to_device(feats, torch.device("cpu"))
            head.train()
            logits, targets = head.training_logits(feats, labels, 255)
            loss = segmentation_loss(logits, targets, 255, 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return {"epoch_s": float(np.mean(times)), "extract_share": extract_s / sum(times), "peak_rss_mib": peak_rss_mib()}


def run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", *args, "--threads", str(threads)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.exit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=48, help="tiles in the base store (2/3 train)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child is not None:
        kind, store, *rest = a.child
        if kind == "store":
            r = child_store(store, a.epochs, int(rest[0]), rest[1])
        else:
            r = child_recompute(store, a.epochs)
        print(json.dumps(r))
        return

    root = Path(tempfile.mkdtemp(prefix="bench-train-head-", dir=a.dir))
    small, large, per_tile = build_stores(root, a.tiles)
    print(f"stores in {root}: {a.tiles} and {4 * a.tiles} tiles of 256 px; tiny extraction {per_tile:.3f} s/tile "
          f"(2 timesteps); torch threads {a.threads}; {a.epochs} epochs each")
    store0 = run_child(["store", small, "0", str(root / "run0")], a.threads)
    store2 = run_child(["store", small, "2", str(root / "run2")], a.threads)
    recompute = run_child(["recompute", small], a.threads)
    store4x = run_child(["store", large, "0", str(root / "run4x")], a.threads)
    rows = [("store, 0 workers", store0), ("store, 2 workers", store2), ("recompute with tiny", recompute),
            (f"store 4x ({4 * a.tiles} tiles), 0 workers", store4x)]
    print(f"\n{'':34} {'epoch s':>8} {'data wait':>10} {'peak RSS MiB':>13}")
    for name, r in rows:
        share = f"{100 * r['data_share']:.0f} %" if "data_share" in r else "-"
        print(f"{name:34} {r['epoch_s']:8.2f} {share:>10} {r['peak_rss_mib']:13.0f}")
    print(f"recompute epoch spent {100 * recompute['extract_share']:.0f} % of its time in the tiny model")
    print(f"\nrecompute / store epoch time: {recompute['epoch_s'] / store0['epoch_s']:.1f}x "
          f"(peak RSS {recompute['peak_rss_mib'] / store0['peak_rss_mib']:.2f}x)")
    n_train = (2 * a.tiles) // 3
    for label, per_tile_s in (("bf16", 1.9), ("fp32", 4.9)):
        projected = (store0["epoch_s"] + n_train * per_tile_s) / store0["epoch_s"]
        print(f"  projected for the reference 400 M model ({per_tile_s} s/tile {label}, docs/architecture.md, "
              f"not here): {projected:.0f}x")
    print(f"4x store / store: epoch time {store4x['epoch_s'] / store0['epoch_s']:.1f}x, "
          f"peak RSS {store4x['peak_rss_mib'] / store0['peak_rss_mib']:.2f}x")
    print(f"full train command (fit + val each epoch + test + report), {a.epochs} epochs: {store0['total_s']:.1f} s")


if __name__ == "__main__":
    main()
