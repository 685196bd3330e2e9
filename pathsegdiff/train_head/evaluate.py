"""Apply a trained head to a split of one store or several (read as one) and measure it.

Pixel metrics come from one confusion matrix accumulated over the split,
per-slide metrics from one matrix per slide and per-patient metrics from one
matrix per patient (all of its slides, whichever store they are in: a slide
or patient id names one slide or patient across the stores).  Tiles without
a patient are left out of the per-patient metrics.  GlaS object metrics are
added when the stores hold instance ids: predicted objects are the connected
components of the predicted foreground (every class but 0) inside the
labelled region.

On a PCA store a built-in head reads the stored coefficients with its first
layer composed onto them, not decoded features (``read_path.py``); the path
taken is in the metrics (``feature_path``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathsegdiff.errors import ConfigError, InputError, StoreExistsError
from pathsegdiff.output_dir import require_room, written_or_removed
from pathsegdiff.train_head.boundary import BoundaryF1
from pathsegdiff.train_head.checkpoint import HeadMeta, check_store_matches, checkpoint_dir, load_head, recorded_stores
from pathsegdiff.train_head.data import TileDataset, batch_inputs, make_loader
from pathsegdiff.train_head.fit import resolve_device
from pathsegdiff.train_head.heads import needs_rgb
from pathsegdiff.train_head.heads.protocol import predict_classes
from pathsegdiff.train_head.metrics import ConfusionMatrix, per_patient_summary, per_slide_summary
from pathsegdiff.train_head.object_metrics import ObjectMetrics, instances_from_mask
from pathsegdiff.train_head.progress import bar
from pathsegdiff.train_head.read_path import read_path
from pathsegdiff.train_head.results import EvaluateResult, metrics_text
from pathsegdiff.train_head.splits import read_splits, require_labels
from pathsegdiff.train_head.store_set import StoreSet, open_stores


@dataclass
class Evaluation:
    """Metrics of one head on one set of tiles, and a few tiles kept for overlays."""

    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    samples: list[dict[str, Any]] = field(default_factory=list)  # index, tile_id, rgb, labels, predicted

    def line(self) -> str:
        return f"{self.metrics['n_tiles']} tiles: {metrics_text(self.metrics)}"


def require_rgb(head: nn.Module | type, stores: StoreSet) -> None:
    """Refuse stores without RGB for a head (or head class) that needs the tiles' RGB (one line)."""
    lacking = [str(s.location) for s in stores.stores if not s.schema.store_rgb]
    if needs_rgb(head) and lacking:
        name = head.__qualname__ if isinstance(head, type) else type(head).__qualname__
        raise ConfigError(f"{lacking[0]}: the {name} head needs the tiles' RGB and this store holds none "
                          "(extracted without RGB); choose a head that uses features only")


@torch.no_grad()
def evaluate_head(
    head: nn.Module,
    meta: HeadMeta,
    where: str | Sequence[str],
    indices: np.ndarray,
    device: str = "cpu",
    batch_size: int = 8,
    loader_workers: int = 0,
    keep_samples: int = 4,
    progress: bool = False,
    desc: str = "evaluate",
    compose: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> Evaluation:
    """Predict every tile of ``indices`` (numbered across the stores ``where``) and accumulate pixel,
    per-slide, per-patient and object metrics.  ``compose=False``: decode a PCA store's features even for a
    head that composes onto its coefficients; ``echo`` hears why a head on a PCA store decodes."""
    dev = resolve_device(device)
    head = head.to(dev).eval()
    stores = open_stores(where)
    require_rgb(head, stores)
    path = read_path(head, stores.stores[0], compose, echo)  # stores read as one share encoding and bases
    head = path.head
    # an extra goes into every item or none, or the batch cannot be collated
    with_instances = all(s.schema.store_instances for s in stores.stores)
    rgb_in = needs_rgb(head)
    with_rgb = (keep_samples > 0 or rgb_in) and all(s.schema.store_rgb for s in stores.stores)
    table = stores.full_table()
    slides = np.asarray(table["slide_id"]).astype(str)
    patients = np.asarray(table["patient"]).astype(str)
    tile_ids = stores.tile_ids()
    n_classes, ignore = meta.head.n_classes, meta.ignore_index
    ds = TileDataset(stores.wheres, indices, meta.blocks, meta.timesteps,
                     with_rgb=with_rgb, with_instances=with_instances, coefficients=path.coefficients)
    cm = ConfusionMatrix(n_classes, ignore)
    boundary = BoundaryF1(n_classes, ignore)
    by_slide: dict[str, ConfusionMatrix] = {}
    by_patient: dict[str, ConfusionMatrix] = {}
    slides_of: dict[str, set[str]] = {}
    objects = ObjectMetrics() if with_instances else None
    samples: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []  # tiles with fewer than two labelled classes: shown only to fill up
    loader = make_loader(ds, batch_size, False, loader_workers)
    for batch in bar(len(loader), desc, progress, iterable=loader):
        inputs = batch_inputs(batch, dev, meta.head.out_size, rgb_in)
        pred = predict_classes(head, inputs, n_classes).cpu().numpy()  # (B, H, W)
        labels = batch["labels"].numpy()
        cm.update(pred, labels)
        for j, i in enumerate(batch["index"].tolist()):
            boundary.update(pred[j], labels[j])
            slide = slides[i] or "(no slide id)"
            by_slide.setdefault(slide, ConfusionMatrix(n_classes, ignore)).update(pred[j], labels[j])
            if patients[i]:
                by_patient.setdefault(patients[i], ConfusionMatrix(n_classes, ignore)).update(pred[j], labels[j])
                slides_of.setdefault(patients[i], set()).add(slide)
            if objects is not None:
                labelled = labels[j] != ignore
                objects.update(batch["instances"][j].numpy() * labelled,
                               instances_from_mask((pred[j] != 0) & labelled))
            # example tiles for overlays.png: tiles holding two or more labelled classes first (not empty glass)
            varied = len(np.unique(labels[j][labels[j] != ignore])) >= 2
            pool = samples if varied else plain
            if len(pool) < keep_samples and "rgb" in batch:
                pool.append({"index": i, "tile_id": str(tile_ids[i]), "rgb": batch["rgb"][j].numpy(),
                             "labels": labels[j], "predicted": pred[j]})
    samples = (samples + plain)[:keep_samples]
    metrics = {**cm.summary(meta.class_names), **boundary.summary(meta.class_names), "n_tiles": int(len(indices)),
               "per_slide": per_slide_summary(by_slide), "per_patient": per_patient_summary(by_patient, slides_of),
               **path.record()}
    if objects is not None:
        metrics["objects"] = objects.summary()
    return Evaluation(metrics, cm, samples)


def label_origin(stores: StoreSet) -> dict[str, Any]:
    """How the stores' labels were made, as far as their provenance says (pseudo-labels if any store's are).

    Extraction saves the tile source's own description under
    ``provenance["source"]``; a source that computes labels from the pixels
    names them there (the demo's stain labels: ``"labels": "stain_classes
    (colour deconvolution) ..."`` and a kind ending in ``+stain-labels``).
    ``label_source`` is None when no provenance says.
    """
    said, stain = [], False
    for store in stores.stores:
        source = store.provenance.get("source") if isinstance(store.provenance, dict) else None
        source = source if isinstance(source, dict) else {}
        labels = str(source["labels"]) if source.get("labels") else None
        stain |= "stain-labels" in str(source.get("kind", "")) or "stain_classes" in (labels or "")
        if labels and labels not in said:
            said.append(labels)
    return {"label_source": "; ".join(said) or None, "pseudo_labels": stain}


def report_name(wheres: Sequence[str], split: str) -> str:
    """``<store>-<split>``, or ``<store>+<store>-<split>`` (``<store>+<k>_more`` past three stores)."""
    names = [re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(w).rstrip("/")).name) or "store" for w in wheres]
    joined = "+".join(names) if len(names) <= 3 else f"{names[0]}+{len(names) - 1}_more"
    return f"{joined}-{split}"


def evaluate_run(
    run_dir: str | os.PathLike,
    stores: str | Sequence[str] | None = None,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    plots: bool = True,
    progress: bool = True,
    head_code: str | os.PathLike | None = None,
    compose: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> EvaluateResult:
    """Evaluate the head saved in ``run_dir`` on ``split`` of one store or several (default: the stores the
    run was trained on); write a report.

    The report goes to ``out_dir`` (default ``RUN/eval/<store names>-<split>``) so
    that the training results in ``RUN/results.json`` are never replaced.  A plug-in head is rebuilt from
    its recorded code while that has the recorded hash, else from ``head_code`` (``heads/plugins.py``).
    On a PCA store a built-in head reads the coefficients (``compose=False``: decoded features); ``echo``
    hears the line that says a head decodes there.
    """
    from pathsegdiff.train_head.report import write_report

    head, meta = load_head(run_dir, device="cpu", head_code=head_code)
    stores = open_stores(recorded_stores(run_dir) if stores is None else stores)
    for store in stores.stores:
        require_labels(store)
        check_store_matches(meta, store)
    train = meta.train
    splits = read_splits(stores, int(train.get("data_seed", 0)), float(train.get("val_fraction", 0.2)))
    indices = splits.get(split)
    if not len(indices):
        counts = ", ".join(f"{s} {len(splits.get(s))}" for s in ("train", "val", "test"))
        raise InputError(f"{stores.location}: the {split} split has no written tile (written tiles: {counts})")
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval" / report_name(stores.wheres, split)
    if out.exists() and any(out.iterdir()) and not (out / "results.json").is_file():
        raise StoreExistsError(f"{out}: exists and is not an evaluation report; choose another output")
    require_room(out, 16 * 2**20, "the evaluation report")  # before the evaluation, not after it
    ev = evaluate_head(head, meta, stores.wheres, indices, device, batch_size, progress=progress,
                       desc=f"evaluate: {split} split", compose=compose, echo=echo)
    results = {
        **ev.metrics, "split": split, "stores": list(stores.wheres), "store_identity": stores.identity,
        "head_store_identity": meta.store_identity, "class_names": list(meta.class_names),
        "head": meta.head.kind, "blocks": list(meta.blocks), "timesteps": list(meta.timesteps),
        "checkpoint": str(checkpoint_dir(run_dir)), "runs": 1, **label_origin(stores),
    }
    fresh = not out.exists()
    with written_or_removed(out, "the evaluation report", remove=fresh):  # a report folder from before is not removed
        write_report(out, results, confusion=ev.confusion, samples=ev.samples, histories=None,
                     class_names=meta.class_names, ignore_index=meta.ignore_index, plots=plots, progress=progress)
    return EvaluateResult(json.loads((out / "results.json").read_text()), out)
