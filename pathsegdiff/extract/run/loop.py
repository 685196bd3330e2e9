"""The per-tile loop every extraction runs: decode, compute on the device, write in the background.

:func:`extract_tiles` serves the single-process job (``job.py``) and every
range of a distributed run (``distributed.py``).  DataLoader workers decode
tiles; an unreadable tile is a named failure (``unreadable``), recorded with
``--skip-errors``, else the end of the run.  The model runs on the device
(``featurize.py``: autocast for bf16/fp16), features are cast to the storage dtype there, and a
writer thread takes each batch from a bounded queue, so the model never waits
on compression or disk.  On any exit, Ctrl-C included, the batches already
computed are written first.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathsegdiff.errors import InputError, PathsegdiffError
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.store import StoreSchema, TileBatch
from pathsegdiff.tiles.sources import TileSource

class _Decode(Dataset):
    """Decodes tile ``todo[k]``; an unreadable tile comes back as its error message."""

    def __init__(self, source: TileSource, todo: np.ndarray):
        self.source, self.todo = source, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        i = int(self.todo[k])
        try:
            return i, self.source.load(i), None
        except PathsegdiffError as e:  # named skip reason: unreadable
            return i, None, str(e)


def _collate(items):
    return items


class _Writer:
    """A background thread writing batches in order; its first error is re-raised in the caller."""

    def __init__(self, depth: int):
        self.q, self.error = queue.Queue(maxsize=depth), None
        self.thread = threading.Thread(target=self._run, name="pathsegdiff-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.q.get()) is not None:
            if self.error is None:
                try:
                    job()
                except BaseException as e:  # handed to the main thread
                    self.error = e

    def put(self, job) -> None:
        self._raise()
        self.q.put(job)

    def close(self, raise_error: bool = True) -> None:
        self.q.put(None)
        self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def extract_tiles(source: TileSource, todo: np.ndarray, w, featurizer: Featurizer, cfg: ExtractConfig,
                  summary: ExtractSummary, on_batch=lambda n: None, on_failed=lambda ids, reasons: None,
                  stop=lambda: False) -> None:
    """Decode, compute and write tiles ``todo`` through the writer ``w``: the loop every run shares.

    ``w.write`` and ``w.mark_failed`` run in a background thread, in order; the
    batches computed before an error, Ctrl-C or ``stop()`` are written before
    this returns or raises.
    """
    loader = DataLoader(_Decode(source, todo), batch_size=cfg.batch_size, num_workers=cfg.decode_workers,
                        collate_fn=_collate, persistent_workers=False)
    writer = _Writer(cfg.queue_batches)
    try:
        for items in loader:
            bad = [(i, err) for i, _, err in items if err is not None]
            if bad:
                ids = w.tile_ids([i for i, _ in bad])
                if not cfg.skip_errors:
                    raise InputError(f"{bad[0][1]} (tile {ids[0]}; --skip-errors records such tiles and goes on)")
                reasons = [f"unreadable: {err}" for _, err in bad]
                summary.failed.update(zip(map(str, ids), reasons))
                writer.put(lambda b=[i for i, _ in bad], r=reasons: w.mark_failed(b, r))
                on_failed(ids, reasons)
            good = [(i, s) for i, s, err in items if err is None]
            if good:
                tm = time.perf_counter()
                batch = _compute(good, w, featurizer, w.schema)
                summary.model_seconds += time.perf_counter() - tm
                writer.put(lambda idx=[i for i, _ in good], b=batch: w.write(idx, b))
                summary.written += len(good)
            on_batch(len(items))
            if stop():
                break
    except BaseException:
        writer.close(raise_error=False)  # finish what was computed, even on Ctrl-C; keep the first error
        raise
    writer.close()


def _compute(good, w, featurizer: Featurizer, schema: StoreSchema) -> TileBatch:
    ids = list(w.tile_ids([i for i, _ in good]))
    rgb = torch.from_numpy(np.stack([s.rgb for _, s in good]))
    store_dtype = torch.float16 if schema.features.dtype == "float16" else torch.float32
    out = featurizer(rgb, ids, out_dtype=store_dtype)
    features = {t: {b: x.cpu().numpy() for b, x in d.items()} for t, d in out.features.items()}
    batch = TileBatch(features, rgb=rgb.numpy())
    if schema.has_labels:
        batch.labels = np.stack([s.labels if s.labels is not None else
                                 np.full(rgb.shape[2:], schema.ignore_index, np.uint8) for _, s in good])
    if schema.store_instances:
        batch.instances = np.stack([s.instances if s.instances is not None else
                                    np.zeros(rgb.shape[2:], np.int32) for _, s in good])
    if schema.ssl_dim:
        batch.ssl = out.ssl.float().cpu().numpy()
    if schema.latent_shape:
        batch.latent = out.latent.float().cpu().numpy()
    return batch
