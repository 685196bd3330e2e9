"""Distributed extraction on dask.distributed: one coordinator, many workers, one store (docs/distributed.md).

The coordinator gets the schema from a worker, then alone creates or resumes
the store (metadata, identity, lock, tile table, status).  The todo tiles are
cut into ranges aligned to the store's shards, so no two ranges write the same
chunk or shard object; each range is a dask task, run by a worker that keeps
the model loaded and writes data chunks only.  A range's tiles are marked
written by the coordinator once its task has returned, so a worker that dies
mid-range leaves them todo and the scheduler reruns the task elsewhere.
Everything else (alignment to an existing store, a PCA preset's calibration,
skipped slides, QC, provenance) is the in-process runner's plan (``plan.py``),
run here on the coordinator.  At the same ``--threads`` the store is
bit-identical to a single-process run; without it, a local cluster divides
the cores between its workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
import time
import uuid
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from pathsegdiff.errors import ConfigError, PathsegdiffError
from pathsegdiff.extract.backbones.registry import builtin_ids
from pathsegdiff.extract.featurize import Featurizer
from pathsegdiff.extract.run.cluster import ClusterConfig, connect, visible_gpus
from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
from pathsegdiff.extract.run.describe import describe_model, load_featurizer
from pathsegdiff.extract.run.loop import extract_tiles
from pathsegdiff.extract.run.plan import ExtractionPlan, refuse_if_locked, require_tiles
from pathsegdiff.store import StoreWriter
from pathsegdiff.store.backend.location import parse_location
from pathsegdiff.store.backend.partial import remove_partial_writes


# -- on the workers -------------------------------------------------------------
_CACHE: dict = {}  # per worker process: the model (one at a time) and the store writer of the current run
_CACHE_LOCK = threading.Lock()
RANGE_TRIES = 3  # submissions of one range whose future was cancelled under it (a lost worker)


def _cached(key, make):
    with _CACHE_LOCK:
        if _CACHE.get(key[0], (None,))[0] != key:
            _CACHE.pop(key[0], None)  # free the old model before loading another
            _CACHE[key[0]] = (key, make())
        return _CACHE[key[0]][1]


def _featurizer(cfg: ExtractConfig) -> Featurizer:
    return _cached(("model", cfg.model, cfg.conditioning, cfg.device, cfg.dtype, cfg.features),
                   lambda: load_featurizer(cfg))


@contextmanager
def _on_worker(cfg: ExtractConfig):
    """Pin torch's threads; name this worker in an expected error."""
    torch.set_num_threads(cfg.threads)
    try:
        yield
    except PathsegdiffError as e:
        from distributed import get_worker

        raise _renamed(e, f"worker {get_worker().address}: {e}") from None


def _renamed(e: PathsegdiffError, message: str) -> PathsegdiffError:
    """``e``'s class with another message, if that survives pickling back to the coordinator."""
    err = type(e).__new__(type(e))
    err.args = (message,)
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return PathsegdiffError(message)


def _describe(source, cfg: ExtractConfig) -> dict:
    with _on_worker(cfg):
        return describe_model(source, _featurizer(cfg), cfg)


def _extract_range(source, store: str, token: str, cfg: ExtractConfig, todo: np.ndarray, stop_event: str):
    """Write the tiles ``todo`` (one range); return (written indices, [(index, reason)] unreadable)."""
    from distributed import Event

    stop = Event(stop_event)
    if stop.is_set():
        return [], []
    if cfg.decode_workers and multiprocessing.current_process().daemon:  # a daemon cannot have children
        cfg = replace(cfg, decode_workers=0)
    with _on_worker(cfg):
        featurizer = _featurizer(cfg)
        w = _cached(("writer", token), lambda: StoreWriter(parse_location(store), lock=None, owns_status=False))
        w.take_collected()  # a rerun task on this worker starts with nothing collected
        extract_tiles(source, todo, w, featurizer, cfg, ExtractSummary(store, len(todo)),
                      stop=lambda: stop.is_set() or _abandoned())
        return w.take_collected()


def _abandoned() -> bool:
    """The scheduler released this task (its coordinator went away): stop writing at the next batch."""
    from distributed import get_worker

    try:
        worker = get_worker()
        task = worker.state.tasks.get(worker.get_current_task())
        return task is None or task.state in ("cancelled", "released", "forgotten")
    except Exception:  # not on a worker, or dask changed its internals: keep going
        return False


# -- on the coordinator ----------------------------------------------------------
def _absolute(path: str) -> str:
    """Workers may run elsewhere: local paths (store, model, conditioning file) made absolute here."""
    kind, sep, rest = path.partition(":")
    if sep and kind in ("hipt", "precomputed"):
        return f"{kind}:{_absolute(rest)}" if rest else path
    if "://" in path or path == "null" or path in builtin_ids():
        return path
    return os.path.abspath(os.path.expanduser(path))


def ranges(todo: np.ndarray, size: int) -> list[np.ndarray]:
    """The todo indices grouped by aligned blocks of ``size`` tiles (a multiple of the shard size)."""
    if not len(todo):
        return []
    cuts = np.flatnonzero(np.diff(todo // size)) + 1
    return np.split(todo, cuts)


def worker_threads(cfg: ExtractConfig, cluster: ClusterConfig, echo) -> int:
    """Torch threads per worker: ``--threads`` as given (the store then equals a single-process run's at the
    same count), else this machine's cores divided between a local cluster's workers."""
    cores = os.cpu_count() or 1
    if cluster.workers and cluster.workers >= cores and not cfg.device.startswith("cuda"):
        echo(f"warning: {cluster.workers} workers on {cores} CPU cores: the workers compete for the cores; "
             f"one process ('pathsegdiff extract' without --workers) is faster on one machine")
    if cfg.threads:
        echo(f"{cfg.threads} torch thread(s) per worker (--threads)")
        return cfg.threads
    if cluster.workers:
        n = max(1, cores // cluster.workers)
        echo(f"{n} torch thread(s) per worker: {cores} cores divided between {cluster.workers} workers "
             f"(--threads N sets another count; the store records it)")
        return n
    n = torch.get_num_threads()
    echo(f"{n} torch thread(s) per worker, as this process would use alone (--threads N sets another count)")
    return n


def run_distributed(source, store: str | os.PathLike, cfg: ExtractConfig, cluster: ClusterConfig,
                    progress: bool = True, echo=print) -> ExtractSummary:
    """Fill (or resume) ``store`` with the features of every tile of ``source``, on a dask cluster.

    The plan (``plan.py``) is the in-process runner's: aligned to an existing store, calibrated here (a PCA
    preset on a new store), skipped slides and QC recorded here; the workers only compute ranges.
    """
    from distributed import Event, as_completed
    from tqdm import tqdm

    started = time.perf_counter()
    store = _absolute(str(store))
    require_tiles(source)
    cfg = replace(cfg, model=_absolute(cfg.model), conditioning=_absolute(cfg.conditioning))
    cfg = replace(cfg, threads=worker_threads(cfg, cluster, echo))
    refuse_if_locked(store)  # before the workers load the model
    with connect(cluster, cfg.device) as client:
        try:
            client.wait_for_workers(1, timeout=cluster.wait_workers)
        except TimeoutError:
            raise ConfigError(f"no dask worker joined the scheduler at {client.scheduler.address} within "
                              f"{cluster.wait_workers:g} s; start some ('dask worker ADDRESS --nthreads 1')") from None
        wcfg = replace(cfg, device="cuda") if cluster.workers and visible_gpus() and cfg.device.startswith("cuda") \
            else cfg  # a pinned worker sees its one GPU as cuda:0
        src = client.scatter(source, broadcast=True, hash=False)
        # Every worker loads the model now, in parallel; the first to finish describes it.
        warm = [client.submit(_describe, src, wcfg, pure=False, workers=[a], allow_other_workers=True)
                for a in client.nthreads()]
        info = next(as_completed(warm, loop=client.loop)).result()
        for line in filter(None, [info["warning"], *info["notes"]]):
            echo(line)
        n_workers = len(client.nthreads())
        with _torch_threads(cfg.threads):  # a PCA preset calibrates here, at the workers' thread count
            plan = ExtractionPlan.prepare(
                source, store, cfg, info, calibrator=lambda: load_featurizer(cfg), echo=echo, started=started,
                distributed={"workers": n_workers, "scheduler": client.scheduler.address})
        if plan.source is not source:  # aligned to the store's order: the workers index the same tiles
            src = client.scatter(plan.source, broadcast=True, hash=False)
        with plan.writer() as w:
            todo = plan.begin(w, progress)
            shard = w.schema.shard_tiles
            size = -(-(cluster.range_tiles or 4 * cfg.batch_size) // shard) * shard
            parts = ranges(todo, size)
            echo(f"{plan.preflight_line}; {len(parts)} ranges of up to {size} tiles on {n_workers} workers")
            token = uuid.uuid4().hex
            stop = Event(f"pathsegdiff-stop-{token}", client=client)
            tries = dict.fromkeys((int(p[0]) for p in parts), 0)
            summary = plan.summary

            def submit(part: np.ndarray):
                tries[int(part[0])] += 1
                return client.submit(_extract_range, src, store, token, wcfg, part, stop.name, pure=False,
                                     key=f"pathsegdiff-range-{int(part[0])}-{tries[int(part[0])]}-{token}")

            pending = {submit(part): part for part in parts}
            with tqdm(total=len(todo), unit="tile", desc="extract", disable=not progress, smoothing=0.1) as bar:
                try:
                    done = as_completed(list(pending), loop=client.loop)
                    for fut in done:
                        part = pending.pop(fut)
                        if fut.status == "cancelled" and tries[int(part[0])] < RANGE_TRIES:
                            # A killed worker can take the scattered source with it, cancelling the
                            # ranges that need it (dask/distributed#3149): scatter again, resubmit.
                            if src.status != "finished":
                                src = client.scatter(plan.source, broadcast=True, hash=False)
                            new = submit(part)
                            pending[new] = part
                            done.add(new)
                            continue
                        bar.update(_record(w, _result(fut, part), summary, plan))
                        bar.set_postfix_str(f"{len(client.nthreads())} workers", refresh=False)
                except BaseException:
                    with contextlib.suppress(Exception):  # best effort: the first error is the one to report
                        stop.set()  # running ranges stop after their current batch; what they wrote is kept
                        _drain(pending, w, summary, plan, cluster.drain_timeout)
                    raise
            if w.location.local_dir is not None:  # every range has returned: no worker is writing
                remove_partial_writes(w.location.local_dir)  # left by workers killed inside an object write
    return plan.finish()


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _result(fut, part: np.ndarray):
    from distributed import KilledWorker

    try:
        return fut.result()
    except KilledWorker as e:
        raise PathsegdiffError(f"tiles {int(part[0])}..{int(part[-1])}: the workers running them died "
                               f"repeatedly ({e}); those tiles stay todo, rerun to resume") from None
    except CancelledError:
        raise PathsegdiffError(f"tiles {int(part[0])}..{int(part[-1])}: cancelled {RANGE_TRIES} times by the "
                               "cluster (workers lost); those tiles stay todo, rerun to resume") from None


def _record(w, result, summary: ExtractSummary, plan: ExtractionPlan) -> int:
    """Set the status of a finished range: written tiles, then unreadable ones (with --skip-errors)."""
    written, failed = result
    if written:
        w.mark_written(written)
    if failed:
        idx, reasons = [i for i, _ in failed], [r for _, r in failed]
        w.mark_failed(idx, reasons)
        ids = w.tile_ids(idx)
        summary.failed.update(zip(map(str, ids), reasons))
        plan.log_failures(ids, reasons)
    summary.written += len(written)
    return len(written) + len(failed)


def _drain(pending: dict, w, summary: ExtractSummary, plan: ExtractionPlan, timeout: float) -> None:
    """After an error: record the ranges that still finish within ``timeout`` s; the rest stay todo."""
    from distributed import wait

    try:
        wait(list(pending), timeout=timeout)
    except TimeoutError:
        pass
    for fut in pending:
        if fut.status == "finished":
            _record(w, fut.result(), summary, plan)
