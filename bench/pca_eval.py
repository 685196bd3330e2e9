"""``evaluate`` and ``predict --store`` on a PCA store: the head composed onto the coefficients against decoding.

Side by side in one process, on the same PCA store, the same head and the
same tiles (``train_head/read_path.py`` says what is composed):

- read tiles/s: every written tile through ``TileDataset`` (what evaluation
  waits on), decoded features against coefficients;
- evaluate tiles/s: ``evaluate_head`` over every written tile (metrics,
  boundary F1 and per-slide matrices included, the same in both paths);
- predict tiles/s: predict's own per-tile path for stored tiles (``read_tile``
  then the head on one tile, as ``predict --store`` runs it), over every tile
  of the slide the store holds; for a store that holds every tile predict
  plans, also the whole ``predict`` call (stitching and writing included);
- agreement: the largest difference of a class probability and the number of
  differing predicted labels over every pixel of every tile, and the
  differing pixels of the two predicted masks.

Stores (``--stores``): (1) ``tiny``: the bundled slide extracted with the seeded ``tiny`` model
(256 px every 128 px at 0.5 um/px, stain labels, every tile with any tissue,
so that predict finds all its tiles in the store), cached under ``--work``;
(2) ``demo``: the store of ``pathsegdiff demo -o DIR`` (``--demo DIR``; read
only: its PCA copy is written under ``--work``) and the fcn head the demo
trained; (3) ``reference``: bench/coefficients.py's synthetic store at the
reference model's shapes (576 and 384 channels), where decoding costs most.
Heads are trained for ``--epochs`` on the PCA store's coefficients.
Timings are the best of ``--repeats`` interleaved passes, wall-clock on
whatever this machine is doing; the ratio is the number to read.

    .venv/bin/python bench/pca_eval.py [--stores tiny,demo,reference] [--preset pca16-int8] [--heads fcn,linear]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # a shared 2-core machine
    os.environ.setdefault(_var, "1")

import numpy as np
import torch

SLIDE = Path(__file__).parents[1] / "tests" / "data" / "cmu_small_region.svs"
TILE, STRIDE = 256, 128


def tiny_store(work: Path) -> Path:
    """The bundled slide through the tiny model, every tile with any tissue (extracted once, then reused)."""
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store import open_store
    from pathsegdiff.tiles.stain_labels import StainLabelledSource
    from pathsegdiff.tiles.wsi import SlideSource

    out = work / "tiny-slide.zarr"
    if out.exists() and len(open_store(out).written()) == open_store(out).n_tiles:
        return out
    source = StainLabelledSource(SlideSource(SLIDE, tile_size=TILE, stride=STRIDE, target_mpp=0.5, min_tissue=0.0))
    t0 = time.perf_counter()
    run_extraction(source, out, ExtractConfig(model="tiny", threads=1, overwrite=True), echo=lambda m: None)
    print(f"extracted {out} ({len(source)} tiles, tiny model) in {time.perf_counter() - t0:.0f} s")
    return out


def compact(src: Path, dst: Path, preset: str) -> Path:
    from pathsegdiff.store.commands.compact import compact_store

    if dst.exists():
        shutil.rmtree(dst)
    compact_store(src, dst, preset)
    return dst


def trained(store: Path, run: Path, kind: str, epochs: int) -> Path:
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    options = {"ensemble": 2, "mlp_hidden": (32, 16)} if kind == "mlp" else {}
    train(str(store), run, TrainConfig(head=kind, epochs=epochs, patience=epochs, coefficients=True,
                                       head_options=options), overwrite=True, progress=False, plots=False)
    return run


def best_rates(fns: dict, n_tiles: int, repeats: int) -> dict[str, float]:
    """Tiles/s of each of ``fns`` (name -> callable), best of ``repeats`` passes run in turn, after a warm-up."""
    best = {k: 0.0 for k in fns}
    for name, fn in fns.items():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = max(best[name], n_tiles / (time.perf_counter() - t0))
    return best


def read_all(store: Path, meta, indices, coefficients: bool) -> None:
    from pathsegdiff.train_head.data import TileDataset

    ds = TileDataset(str(store), indices, meta.blocks, meta.timesteps, coefficients=coefficients)
    for i in range(len(ds)):
        ds[i]


def agreement(head, meta, store: Path, indices) -> tuple[float, int, int]:
    """(largest |p_composed - p_decoded|, differing labels, pixels) over every pixel of ``indices``."""
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.data import TileDataset, batch_inputs, make_loader
    from pathsegdiff.train_head.heads.protocol import predict_classes
    from pathsegdiff.train_head.read_path import read_path

    composed = read_path(head, open_store(store)).head
    worst, differ, pixels = 0.0, 0, 0
    rgb = bool(getattr(head, "needs_rgb", False))
    loaders = [make_loader(TileDataset(str(store), indices, meta.blocks, meta.timesteps, with_rgb=rgb,
                                       coefficients=c), 4, False) for c in (False, True)]
    with torch.no_grad():
        for dec, coe in zip(*loaders):
            a = batch_inputs(dec, torch.device("cpu"), meta.head.out_size, rgb)
            b = batch_inputs(coe, torch.device("cpu"), meta.head.out_size, rgb)
            pa, pb = head(a).softmax(1), composed(b).softmax(1)  # the mlp's log mean probabilities: the same
            worst = max(worst, float((pa - pb).abs().max()))
            la, lb = predict_classes(head, a, meta.head.n_classes), predict_classes(composed, b, meta.head.n_classes)
            differ += int((la != lb).sum())
            pixels += la.numel()
    return worst, differ, pixels


def predict_loop(head, meta, store: Path, stored: list[int], compose: bool) -> None:
    """predict --store's per-tile path for stored tiles: read_tile (coefficients or decoded), the head, logits."""
    from pathsegdiff.predict.run import _stored
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.data import to_device
    from pathsegdiff.train_head.heads import HeadInputs
    from pathsegdiff.train_head.heads.protocol import logits
    from pathsegdiff.train_head.read_path import read_path

    fs = open_store(store)
    path = read_path(head, fs, compose)
    size = meta.head.out_size
    with torch.no_grad():
        for i in stored:
            rgb = torch.from_numpy(fs.read_rgb(i))[None].float() / 255 if getattr(head, "needs_rgb", False) else None
            feats = to_device(_stored(fs, i, meta, path.coefficients), torch.device("cpu"))
            logits(path.head, HeadInputs(feats, (size, size), rgb), meta.head.n_classes)[0].numpy()


def slide_tiles(store: Path) -> tuple[list[int], int]:
    """Store indices of the tiles predict plans for the bundled slide (stride 128) that the store holds, and
    how many it plans."""
    from pathsegdiff.predict.coverage import match_store
    from pathsegdiff.predict.inputs import open_input
    from pathsegdiff.predict.stitch import StitchConfig
    from pathsegdiff.store import open_store

    stitch = StitchConfig(tile=TILE, overlap=TILE - STRIDE)
    source = open_input(SLIDE, TILE, stitch, 0.5, 0.0)
    plan = source.plan(stitch)
    cov = match_store(open_store(store), plan, SLIDE.stem, source.mpp, TILE, stitch.stride)
    return sorted(cov.stored.values()), len(plan)


def whole_predict(run: Path, store: Path, work: Path, compose: bool) -> tuple[float, np.ndarray]:
    import tifffile

    from pathsegdiff.predict.run import PredictConfig, predict

    out = work / f"predict-{compose}"
    t0 = time.perf_counter()
    predict(SLIDE, run, out, PredictConfig(model=None, store=str(store), overlap=TILE - STRIDE, compose=compose),
            overwrite=True)
    seconds = time.perf_counter() - t0
    return seconds, tifffile.imread(out / "mask.tif")


def bench(name: str, store: Path, run: Path, work: Path, repeats: int, slide: bool) -> None:
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.checkpoint import load_head
    from pathsegdiff.train_head.evaluate import evaluate_head

    head, meta = load_head(run)
    fs = open_store(store)
    indices = fs.written()
    n = len(indices)
    reads = best_rates({c: (lambda c=c: read_all(store, meta, indices, c)) for c in (False, True)}, n, repeats)
    evals = best_rates({c: (lambda c=c: evaluate_head(head, meta, str(store), indices, keep_samples=0, compose=c))
                        for c in (True, False)}, n, repeats)
    worst, differ, pixels = agreement(head, meta, store, indices)
    blocks = ", ".join(f"{b.name} {b.channels}->{fs.encoding.basis(meta.timesteps[0], b.name).k}"
                       for b in meta.head.blocks)
    print(f"\n### {name}: {meta.head.kind} head, {fs.encoding.encoding.name} ({blocks} channels), {n} tiles of "
          f"{meta.head.out_size} px, load average {os.getloadavg()[0]:.2f}\n")
    print("| what | decoded tiles/s | composed tiles/s | ratio |")
    print("|---|---|---|---|")
    print(f"| read (TileDataset) | {reads[False]:.1f} | {reads[True]:.1f} | {reads[True] / reads[False]:.2f}x |")
    print(f"| evaluate_head | {evals[False]:.1f} | {evals[True]:.1f} | {evals[True] / evals[False]:.2f}x |")
    if slide:
        stored, planned = slide_tiles(store)
        loops = best_rates({c: (lambda c=c: predict_loop(head, meta, store, stored, c)) for c in (True, False)},
                           len(stored), repeats)
        print(f"| predict --store, per tile ({len(stored)} of {planned} planned tiles stored) | {loops[False]:.1f} "
              f"| {loops[True]:.1f} | {loops[True] / loops[False]:.2f}x |")
        if len(stored) == planned:
            (s_c, m_c), (s_d, m_d) = whole_predict(run, store, work, True), whole_predict(run, store, work, False)
            print(f"| predict --store, whole call (s; tiles/s) | {s_d:.1f} s; {planned / s_d:.1f} | {s_c:.1f} s; "
                  f"{planned / s_c:.1f} | {s_d / s_c:.2f}x |")
            print(f"\nmask pixels differing between the two predict calls: {int((m_c != m_d).sum())} of {m_c.size}")
    print(f"max |p_composed - p_decoded| over every pixel and class: {worst:.2e}; predicted labels differing: "
          f"{differ} of {pixels}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/pcaeval")
    p.add_argument("--preset", default="pca16-int8")
    p.add_argument("--heads", default="fcn,linear", help="heads trained on the tiny and reference stores (mlp: 2 "
                   "members of 32, 16)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stores", default="tiny,reference", help="tiny, demo and/or reference (see above)")
    p.add_argument("--demo", default="/tmp/demo_he", help="a 'pathsegdiff demo' output folder (its store is only "
                   "read)")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    stores = a.stores.split(",")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "tiny" in stores:
        pca = compact(tiny_store(work), work / f"tiny-slide-{a.preset}.zarr", a.preset)
        for kind in a.heads.split(","):
            run = trained(pca, work / f"run-tiny-{kind}", kind, a.epochs)
            bench(f"tiny model, bundled slide ({kind})", pca, run, work, a.repeats, slide=True)
    if "demo" in stores:
        demo = Path(a.demo)
        pca = compact(demo / "features.zarr", work / f"demo-{a.preset}.zarr", a.preset)
        bench("he-tiny demo store, the demo's fcn head (trained on float16)", pca, demo / "run", work, a.repeats,
              slide=True)
    if "reference" in stores:
        from coefficients import build_store  # bench/coefficients.py (this script's folder is on sys.path)

        ref = work / "reference-pca64-int8.zarr"
        build_store(ref, 48, "pca64-int8")
        for kind in a.heads.split(","):
            run = trained(ref, work / f"run-reference-{kind}", kind, a.epochs)
            bench(f"reference shapes, synthetic features ({kind})", ref, run, work, a.repeats, slide=False)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
