"""``pathsegdiff cluster``: an unsupervised map of every written tile, from the stored features alone.

Three streaming passes over the tiles, a batch of tiles at a time:

1. per-channel means and standard deviations over every pixel (``pixels.py``);
2. fitting, on ``fit_pixels`` pixels drawn per tile (seeded), tiles in a
   seeded shuffled order so a batch mixes slides (``methods.py``);
3. assigning every pixel: ``tile_maps.npy``, the squared error, and, when the
   stores hold labels, the contingency table against them (``scores.py``).

Then one overlay and one GeoJSON per slide (``slides.py``) and
``summary.json``.  The output folder is checked before pass 1 and written
from pass 3 on; ``--overwrite`` replaces only an earlier ``cluster`` output.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pathsegdiff.cluster.config import ClusterConfig
from pathsegdiff.cluster.methods import make_method
from pathsegdiff.cluster.pixels import Standardiser, TileFeed, pixels
from pathsegdiff.cluster.scores import LabelAgreement
from pathsegdiff.cluster.slides import footprint, safe_name, write_slide
from pathsegdiff.output_dir import OutputKind, check_output_dir, replace_output_dir, require_room, written_or_removed

CLUSTER_OUTPUT = OutputKind(
    "cluster",
    names=frozenset({"centroids.npy", "components.npy", "standardisation.npz", "tile_maps.npy", "tiles.csv",
                     "slides", "summary.json"}),
    required=frozenset({"summary.json", "tile_maps.npy"}),
)


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="tile", disable=not enabled, leave=False, dynamic_ncols=True)


def cluster_stores(stores: str | Sequence[str], out: str | Path, cfg: ClusterConfig = ClusterConfig(),
                   overwrite: bool = False, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Fit, assign and write (see the module docstring); returns the summary written to ``OUT/summary.json``."""
    t0 = time.perf_counter()
    wheres = [stores] if isinstance(stores, (str, Path)) else list(stores)
    method = make_method(cfg.method, cfg.k, cfg.seed)  # scikit-learn missing: one line before any work
    feed = TileFeed(wheres, cfg.blocks, cfg.timesteps, cfg.size)
    out = check_output_dir(out, CLUSTER_OUTPUT, overwrite)
    h, w = feed.size
    require_room(out, feed.n_tiles * h * w + 16 * 2**20, "the cluster maps")
    echo(f"{feed.n_tiles} tiles, {feed.n_channels} channels ({', '.join(f't{t}/{b}' for t, b, _ in feed.channels)})"
         f" at {h}x{w} per tile; {cfg.method} with k = {cfg.k}")
    rows = np.arange(feed.n_tiles)

    scaler = Standardiser(feed.n_channels)
    with _bar(feed.n_tiles, "standardise", progress) as bar:
        for batch in feed.batches(rows, cfg.batch_tiles):
            scaler.update(pixels(batch.features))
            bar.update(len(batch.rows))

    rng = np.random.default_rng(cfg.seed)
    per_tile = h * w if cfg.fit_pixels == 0 else min(cfg.fit_pixels, h * w)
    for p in range(cfg.passes):
        with _bar(feed.n_tiles, f"fit {p + 1}/{cfg.passes}", progress) as bar:
            for batch in feed.batches(rng.permutation(rows), cfg.batch_tiles):
                px = pixels(batch.features).reshape(len(batch.rows), h * w, -1)
                pick = np.stack([rng.choice(h * w, per_tile, replace=False) for _ in batch.rows])
                method.fit_batch(scaler(np.take_along_axis(px, pick[..., None], 1).reshape(-1, px.shape[-1])))
                bar.update(len(batch.rows))
    method.finish()

    out = replace_output_dir(out, CLUSTER_OUTPUT, overwrite)
    with written_or_removed(out, "the cluster output"):
        maps = np.lib.format.open_memmap(out / "tile_maps.npy", mode="w+", dtype=np.uint8,
                                         shape=(feed.n_tiles, h, w))
        agreement = LabelAgreement(cfg.k, feed.class_names, feed.ignore_index) if feed.class_names else None
        inertia, counts = 0.0, np.zeros(cfg.k, np.int64)
        with _bar(feed.n_tiles, "assign", progress) as bar:
            for batch in feed.batches(rows, cfg.batch_tiles, labels=agreement is not None):
                ids, err = method.assign(scaler(pixels(batch.features)))
                tile_ids = ids.reshape(len(batch.rows), h, w)
                maps[batch.rows] = tile_ids
                inertia += float(err.astype(np.float64).sum())
                counts += np.bincount(ids, minlength=cfg.k)
                if agreement is not None:
                    agreement.add(tile_ids, batch.labels)
                bar.update(len(batch.rows))
        maps.flush()
        _write_model(out, method, scaler, feed)
        table = feed.table()
        _write_tiles(out / "tiles.csv", table)
        slides = _write_slides(out, feed, table, maps, cfg.k, progress)
        summary = {
            "command": "cluster", "k": cfg.k, "method": cfg.method, "stores": list(feed.wheres),
            "blocks": list(feed.blocks), "timesteps": list(feed.timesteps), "seed": cfg.seed,
            "config": cfg.to_dict(), "map_size": [h, w], "tiles": feed.n_tiles,
            "channels": [{"timestep": t, "block": b, "channels": c} for t, b, c in feed.channels],
            "pixels_per_cluster": counts.tolist(), "inertia": inertia,
            "inertia_per_pixel": inertia / max(1, int(counts.sum())),
            "inertia_meaning": ("sum over every pixel of its squared distance to its centroid, standardised units"
                                if cfg.method == "kmeans" else
                                "sum over every pixel of its squared NMF reconstruction error, standardised units"),
            "labels": agreement.summary() if agreement is not None else None,
            "slides": slides, "wall_s": round(time.perf_counter() - t0, 2),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_line(summary: dict, out: str | Path) -> str:
    """The command's result line: what was fitted, the agreement with stored labels if any, where to look."""
    lab = summary.get("labels") or {}
    ari = lab.get("adjusted_rand_index")
    agree = f"; adjusted Rand index {ari:.3f} against the stored labels (diagnostic)" if ari is not None else ""
    return (f"{summary['method']} k={summary['k']} over {summary['tiles']} tiles in {summary['wall_s']:.0f} s{agree}; "
            f"{out}/summary.json, {len(summary['slides'])} slide overlay(s) and GeoJSON in {out}/slides/")


def _write_model(out: Path, method, scaler: Standardiser, feed: TileFeed) -> None:
    np.save(out / "centroids.npy", method.centroids())
    for name, arr in method.saved().items():
        np.save(out / f"{name}.npy", arr)
    names = np.array([f"t{t}/{b}/{i}" for t, b, c in feed.channels for i in range(c)])
    np.savez(out / "standardisation.npz", mean=scaler.mean.astype(np.float32), std=scaler.std.astype(np.float32),
             channels=names)


def _write_tiles(path: Path, table: dict[str, np.ndarray]) -> None:
    cols = ("store", "index", "tile_id", "slide_id", "x", "y")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *cols])
        for r in range(len(table["index"])):
            writer.writerow([r, *(table[c][r] for c in cols)])


def _write_slides(out: Path, feed: TileFeed, table: dict[str, np.ndarray], maps: np.ndarray, k: int,
                  progress: bool) -> dict:
    slide_ids = np.asarray(table["slide_id"]).astype(str)
    order = list(dict.fromkeys(slide_ids))
    folders: dict[str, str] = {}
    result = {}
    for sid in tqdm(order, desc="slides", unit="slide", disable=not progress, leave=False):
        rows = np.flatnonzero(slide_ids == sid)
        xs, ys = table["x"][rows].astype(np.float64), table["y"][rows].astype(np.float64)
        store = int(table["store"][rows[0]])
        fp = footprint(feed.provenance(store), feed.tile_size, xs, ys)
        name = safe_name(sid)
        while name in folders.values():  # two ids that read as the same folder name
            name += "_"
        folders[sid] = name
        rgb = (lambda j, rows=rows: feed.rgb(int(rows[j]))) if feed.has_rgb else None
        info = write_slide(out / "slides" / name, xs, ys, fp, maps[rows], k, rgb, feed.tile_size)
        info.update(overlay=f"slides/{name}/overlay.png", geojson=f"slides/{name}/regions.geojson")
        result[sid] = info
    return result
