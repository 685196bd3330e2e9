"""Train the sweep's cells: in this process (``jobs=1``) or in ``jobs`` worker processes.

Every cell goes through ``train_head.run.train``, the command line's
``train``, into its own run directory.  The cells, their seeds and their
order do not depend on ``jobs``; only where they run does.  Each process
gets ``threads`` torch threads (default: the cores this process may use,
divided by ``jobs``).  torch splits its CPU sums between threads, so the
same cell trained with another thread count differs in the last bits of its
weights: results are bit-identical across ``jobs`` when ``threads`` is the
same.  Workers are started with ``spawn`` (no forked torch or zarr state).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.fit import TrainConfig


def usable_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """``threads`` when given, else the usable cores divided by ``jobs`` (at least 1)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    return threads if threads is not None else max(1, usable_cores() // jobs)


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to train one cell (picklable)."""

    name: str
    stores: tuple[str, ...]
    run_dir: str
    config: TrainConfig


def train_cell(job: CellJob) -> dict[str, Any]:
    """Train one cell into its run directory; its mIoU mean and sd over runs, the seconds it took and the process
    that trained it."""
    from pathsegdiff.train_head.run import train

    t = time.perf_counter()
    r = train(list(job.stores), job.run_dir, job.config, progress=False)
    return {"name": job.name, "miou": r.get("miou"), "miou_sd": (r.get("std") or {}).get("miou"),
            "seconds": time.perf_counter() - t, "pid": os.getpid()}


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_cells(jobs: Sequence[CellJob], n_jobs: int, threads: int,
              done: Callable[[dict[str, Any]], None] = lambda summary: None,
              work: Callable[[CellJob], dict[str, Any]] = train_cell) -> None:
    """Run ``work`` (training, unless a test gives a stand-in) on every job; ``done`` is called in this process
    with each finished cell's summary as soon as it finishes.

    The first failing cell stops the sweep: cells not yet started are cancelled, running ones finish, and the
    error is raised (finished cells stay finished, so a rerun resumes)."""
    if not jobs:
        return
    if n_jobs == 1:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for job in jobs:
                done(work(job))
        finally:
            torch.set_num_threads(before)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=context, initializer=_set_threads,
                               initargs=(threads,))
    try:
        pending = {pool.submit(work, job) for job in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done(future.result())  # a cell's error is raised here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
