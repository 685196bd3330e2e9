"""Apply a trained head to a split of a store and measure it.

Pixel metrics come from one confusion matrix accumulated over the split,
per-slide metrics from one matrix per slide.  GlaS object metrics are added
when the store holds instance ids: predicted objects are the connected
components of the predicted foreground (every class but 0) inside the
labelled region.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathsegdiff.errors import InputError, StoreExistsError
from pathsegdiff.store import FeatureStore, open_store
from pathsegdiff.train_head.checkpoint import HeadMeta, check_store_matches, checkpoint_dir, load_head
from pathsegdiff.train_head.data import TileDataset, make_loader
from pathsegdiff.train_head.fit import resolve_device, to_device
from pathsegdiff.train_head.heads import SegHead
from pathsegdiff.train_head.metrics import ConfusionMatrix, per_slide_summary
from pathsegdiff.train_head.object_metrics import ObjectMetrics, instances_from_mask
from pathsegdiff.train_head.progress import bar
from pathsegdiff.train_head.splits import read_splits, require_labels


@dataclass
class Evaluation:
    """Metrics of one head on one set of tiles, and a few tiles kept for overlays."""

    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    samples: list[dict[str, Any]] = field(default_factory=list)  # index, tile_id, rgb, labels, predicted


@torch.no_grad()
def evaluate_head(
    head: SegHead,
    meta: HeadMeta,
    where: str,
    indices: np.ndarray,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int = 0,
    keep_samples: int = 4,
    progress: bool = False,
    desc: str = "evaluate",
) -> Evaluation:
    """Predict every tile of ``indices`` and accumulate pixel, per-slide and object metrics."""
    dev = resolve_device(device)
    head = head.to(dev).eval()
    store = open_store(where)
    with_instances = store.schema.store_instances
    slides = np.asarray(store.table()["slide_id"]).astype(str)
    tile_ids = store.tile_ids()
    n_classes, ignore = meta.head.n_classes, meta.ignore_index
    ds = TileDataset(where, indices, meta.blocks, meta.timesteps,
                     with_rgb=keep_samples > 0, with_instances=with_instances)
    cm = ConfusionMatrix(n_classes, ignore)
    by_slide: dict[str, ConfusionMatrix] = {}
    objects = ObjectMetrics() if with_instances else None
    samples: list[dict[str, Any]] = []
    loader = make_loader(ds, batch_size, False, workers)
    for batch in bar(len(loader), desc, progress, iterable=loader):
        pred = head.predict(to_device(batch["features"], dev)).cpu().numpy()  # (B, H, W)
        labels = batch["labels"].numpy()
        cm.update(pred, labels)
        for j, i in enumerate(batch["index"].tolist()):
            slide = slides[i] or "(no slide id)"
            by_slide.setdefault(slide, ConfusionMatrix(n_classes, ignore)).update(pred[j], labels[j])
            if objects is not None:
                labelled = labels[j] != ignore
                objects.update(batch["instances"][j].numpy() * labelled,
                               instances_from_mask((pred[j] != 0) & labelled))
            if len(samples) < keep_samples and "rgb" in batch:
                samples.append({"index": i, "tile_id": str(tile_ids[i]), "rgb": batch["rgb"][j].numpy(),
                                "labels": labels[j], "predicted": pred[j]})
    metrics = {**cm.summary(meta.class_names), "n_tiles": int(len(indices)),
               "per_slide": per_slide_summary(by_slide)}
    if objects is not None:
        metrics["objects"] = objects.summary()
    return Evaluation(metrics, cm, samples)


def label_origin(store: FeatureStore) -> dict[str, Any]:
    """How the store's labels were made, as far as its provenance says.

    Extraction saves the tile source's own description under
    ``provenance["source"]``; a source that computes labels from the pixels
    names them there (the demo's stain labels: ``"labels": "stain_classes
    (colour deconvolution) ..."`` and a kind ending in ``+stain-labels``).
    ``label_source`` is None when the provenance does not say.
    """
    source = store.provenance.get("source") if isinstance(store.provenance, dict) else None
    source = source if isinstance(source, dict) else {}
    labels = source.get("labels")
    labels = str(labels) if labels else None
    stain = "stain-labels" in str(source.get("kind", "")) or "stain_classes" in (labels or "")
    return {"label_source": labels, "pseudo_labels": stain}


def evaluate_run(
    run_dir: str | os.PathLike,
    store_where: str,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    plots: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate the head saved in ``run_dir`` on ``split`` of a store; write a report.

    The report goes to ``out_dir`` (default ``RUN/eval/<store name>-<split>``) so
    that the training results in ``RUN/results.json`` are never replaced.
    """
    from pathsegdiff.train_head.report import write_report

    head, meta = load_head(run_dir, device="cpu")
    store = open_store(store_where)
    require_labels(store)
    check_store_matches(meta, store)
    train = meta.train
    splits = read_splits(store, int(train.get("data_seed", 0)), float(train.get("val_fraction", 0.2)))
    indices = splits.get(split)
    if not len(indices):
        counts = ", ".join(f"{s} {len(splits.get(s))}" for s in ("train", "val", "test"))
        raise InputError(f"{store_where}: the {split} split has no written tile (written tiles: {counts})")
    ev = evaluate_head(head, meta, store_where, indices, device, batch_size, progress=progress,
                       desc=f"evaluate: {split} split")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(store_where).rstrip("/")).name) or "store"
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval" / f"{name}-{split}"
    if out.exists() and any(out.iterdir()) and not (out / "results.json").is_file():
        raise StoreExistsError(f"{out}: exists and is not an evaluation report; choose another output")
    results = {
        **ev.metrics, "split": split, "store": str(store_where), "store_identity": store.identity,
        "head_store_identity": meta.store_identity, "class_names": list(meta.class_names),
        "head": meta.head.kind, "blocks": list(meta.blocks), "timesteps": list(meta.timesteps),
        "checkpoint": str(checkpoint_dir(run_dir)), "runs": 1, **label_origin(store),
    }
    write_report(out, results, confusion=ev.confusion, samples=ev.samples, histories=None,
                 class_names=meta.class_names, ignore_index=meta.ignore_index, plots=plots, progress=progress)
    return results, out
