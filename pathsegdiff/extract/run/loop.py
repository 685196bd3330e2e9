"""The per-tile loop every extraction runs: decode, compute on the device, write in the background.

:func:`extract_tiles` serves the single-process job (``job.py``) and every
range of a distributed run (``distributed.py``).  DataLoader workers decode
tiles; an unreadable tile is a named failure (``unreadable``), recorded with
``--skip-errors``, else the end of the run.  The model runs on the device
(``featurize.py``: autocast for bf16/fp16), features are cast to the storage
dtype there, and a writer thread takes each batch from a bounded queue, so
the model never waits on compression or disk.  On any exit, Ctrl-C included,
the batches already computed are written first.

On CUDA (:class:`DeviceToHost`) a batch is copied into pinned host buffers
on a side stream, without blocking: the next batch computes while this one
copies, and the writer thread waits for the copy before it writes; the GPU
has also checked each tile's finiteness, so the store need not.  On the CPU
the tensors already are host memory, and nothing of this runs.  ``timings``
(bench/extract.py) adds up where the loop's time goes.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pathsegdiff.errors import InputError, PathsegdiffError
from pathsegdiff.extract.device_encoding import DeviceEncoder
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
        self.q, self.error, self.busy = queue.Queue(maxsize=depth), None, 0.0
        self.thread = threading.Thread(target=self._run, name="pathsegdiff-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.q.get()) is not None:
            if self.error is None:
                t = time.perf_counter()
                try:
                    job()
                except BaseException as e:  # handed to the main thread
                    self.error = e
                self.busy += time.perf_counter() - t

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


class DeviceToHost:
    """Copies a computed batch to the host: on CUDA into pinned buffers on a side stream, without blocking.

    ``start`` returns the host tensors and a function that waits until they
    hold the data (the writer thread calls it).  ``Tensor.record_stream``
    keeps the device memory from being reused before the copy is done, and
    torch's pinned-memory cache reuses the host buffers once written.  On the
    CPU the tensors are returned as they are.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def start(self, tensors: list[torch.Tensor]):
        if self.stream is None:
            return [t.detach() for t in tensors], lambda: None
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the batch's kernels come first
        with torch.cuda.stream(self.stream):
            host = []
            for t in tensors:
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                t.record_stream(self.stream)
                host.append(h)
            done = torch.cuda.Event()
            done.record(self.stream)
        return host, done.synchronize


def extract_tiles(source: TileSource, todo: np.ndarray, w, featurizer: Featurizer, cfg: ExtractConfig,
                  summary: ExtractSummary, on_batch=lambda n: None, on_failed=lambda ids, reasons: None,
                  stop=lambda: False, timings: dict[str, float] | None = None) -> None:
    """Decode, compute and write tiles ``todo`` through the writer ``w``: the loop every run shares.

    ``w.write`` and ``w.mark_failed`` run in a background thread, in order; the
    batches computed before an error, Ctrl-C or ``stop()`` are written before
    this returns or raises.  ``timings``: seconds are added under ``decode``
    (waiting for decoded tiles), ``compute`` (the model, and starting the copy
    to the host), ``queue`` (waiting for room in the writer's queue) and
    ``write`` (the writer thread at work).
    """
    loader = DataLoader(_Decode(source, todo), batch_size=cfg.batch_size, num_workers=cfg.decode_workers,
                        collate_fn=_collate, persistent_workers=False)
    writer = _Writer(cfg.queue_batches)
    copier = DeviceToHost(featurizer.backbone.device)
    encoder = device_encoder(w, featurizer.backbone.device)
    spent = dict.fromkeys(("decode", "compute", "queue", "write"), 0.0)
    try:
        t = time.perf_counter()
        for items in loader:
            spent["decode"] += time.perf_counter() - t
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
                job = _compute(good, w, featurizer, w.schema, copier, encoder)
                tq = time.perf_counter()
                summary.model_seconds += tq - tm
                spent["compute"] += tq - tm
                writer.put(job)
                spent["queue"] += time.perf_counter() - tq
                summary.written += len(good)
            on_batch(len(items))
            if stop():
                break
            t = time.perf_counter()
    except BaseException:
        writer.close(raise_error=False)  # finish what was computed, even on Ctrl-C; keep the first error
        raise
    finally:
        spent["write"] = writer.busy
        if timings is not None:
            for k, v in spent.items():
                timings[k] = timings.get(k, 0.0) + v
    writer.close()


def device_encoder(w, device: torch.device) -> DeviceEncoder | None:
    """On CUDA a compact store's features are encoded on the GPU (device_encoding.py); elsewhere by the writer."""
    encoding = getattr(w, "encoding", None)
    if device.type != "cuda" or encoding is None or encoding.is_default:
        return None
    return DeviceEncoder(encoding, device)


def _compute(good, w, featurizer: Featurizer, schema: StoreSchema, copier: DeviceToHost,
             encoder: DeviceEncoder | None = None):
    """Compute one batch (encoded on the device with ``encoder``) and start its copy to the host; returns the
    writer thread's job."""
    idx = [i for i, _ in good]
    ids = list(w.tile_ids(idx))
    rgb = torch.from_numpy(np.stack([s.rgb for _, s in good]))
    store_dtype = torch.float16 if schema.features.dtype == "float16" else torch.float32
    out = featurizer(rgb, ids, out_dtype=store_dtype)
    encoded = encoder(out.features) if encoder is not None else None
    names = list(encoded) if encoded is not None else [(t, b) for t, d in out.features.items() for b in d]
    tensors = [encoded[n] for n in names] if encoded is not None else [out.features[t][b] for t, b in names]
    extra = [x for x, keep in ((out.ssl, schema.ssl_dim), (out.latent, schema.latent_shape)) if keep]
    # The verdicts are on the features; encoded arrays carry a non-finite value through, and the writer checks them.
    checked = [out.finite[t][b] for t, b in names] if out.finite is not None and encoded is None else []
    host, copied = copier.start(tensors + [x.float() for x in extra] + checked)
    batch = TileBatch({}, rgb=rgb.numpy())
    if schema.has_labels:
        batch.labels = np.stack([s.labels if s.labels is not None else
                                 np.full(rgb.shape[2:], schema.ignore_index, np.uint8) for _, s in good])
    if schema.store_instances:
        batch.instances = np.stack([s.instances if s.instances is not None else
                                    np.zeros(rgb.shape[2:], np.int32) for _, s in good])

    def write() -> None:  # in the writer thread, once the copy is done
        copied()
        arrays = [h.numpy() for h in host]
        if encoded is None:
            for (t, b), x in zip(names, arrays):
                batch.features.setdefault(t, {})[b] = x
        rest = iter(arrays[len(names):])
        if schema.ssl_dim:
            batch.ssl = next(rest)
        if schema.latent_shape:
            batch.latent = next(rest)
        finite = None
        if checked:
            finite = {}
            for (t, b), ok in zip(names, rest):
                finite.setdefault(t, {})[b] = ok
        if encoded is None:
            w.write(idx, batch, finite=finite)
        else:
            w.write(idx, batch, encoded=dict(zip(names, arrays)))

    return write
