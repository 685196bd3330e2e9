"""The in-process runner: one process loads the model and computes every range of the plan itself.

The store is created or reopened first (identity checked before any model
work) by the plan (``plan.py``: align to an existing store, calibrate a
``--compact pcaK`` preset, skipped slides, QC thumbnails, provenance), and
only ``todo`` tiles go through the per-tile loop (``loop.py``, the same loop
a distributed run's workers use).  The progress bar names the slide being
extracted.  What the status says is written is complete, and a rerun
resumes; the store lock is released on any exit.  CPU features differ in
their last bits between torch thread counts: ``threads`` fixes the count, and
the provenance records it.
"""

from __future__ import annotations

import os
import time

import torch

from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.describe import describe_model, load_featurizer
from pathsegdiff.extract.run.loop import extract_tiles
from pathsegdiff.extract.run.plan import ExtractionPlan, refuse_if_locked, require_tiles
from pathsegdiff.tiles.sources import TileSource


class SlideProgress:
    """Names the slide (k of n) of the next tile on the progress bar; tqdm adds tiles/s and the ETA."""

    def __init__(self, bar, source: TileSource, todo):
        self.bar, self.done = bar, 0
        self.slide_ids = [source.records[int(i)].slide_id for i in todo]
        self.rank = {s: k for k, s in enumerate(dict.fromkeys(r.slide_id for r in source.records))}
        self._show()

    def _show(self) -> None:
        if self.done < len(self.slide_ids) and len(self.rank) > 1:
            sid = self.slide_ids[self.done]
            self.bar.set_description(f"slide {self.rank[sid] + 1}/{len(self.rank)} {sid}", refresh=False)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self._show()


def run_extraction(source: TileSource, store: str | os.PathLike, cfg: ExtractConfig = ExtractConfig(),
                   progress: bool = True, echo=print, backbone=None) -> ExtractSummary:
    """Fill (or resume) the store at ``store`` with features of every tile of ``source``, in this process.

    ``backbone``: an already-built model to use instead of loading ``cfg.model`` (benchmarks, tests).
    """
    from tqdm import tqdm

    store = str(store)
    started = time.perf_counter()
    require_tiles(source)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        refuse_if_locked(store)  # a second writer is refused before it loads the model
        featurizer = load_featurizer(cfg, backbone)
        for line in filter(None, [featurizer.warning(), *featurizer.backbone.notes]):
            echo(line)
        plan = ExtractionPlan.prepare(source, store, cfg, describe_model(source, featurizer, cfg),
                                      calibrator=lambda: featurizer, echo=echo, started=started)
        with plan.writer() as w:
            todo = plan.begin(w, progress)
            echo(plan.preflight_line)
            with tqdm(total=len(todo), unit="tile", desc="extract", disable=not progress, smoothing=0.1) as bar:
                extract_tiles(plan.source, todo, w, featurizer, plan.cfg, plan.summary,
                              on_batch=SlideProgress(bar, plan.source, todo), on_failed=plan.log_failures)
    finally:
        torch.set_num_threads(threads_before)
    return plan.finish()
