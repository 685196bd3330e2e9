"""Where a distributed extraction runs: a client of a running dask scheduler, or of a local cluster.

``connect`` fails fast, on one line, when a scheduler address does not answer;
a local cluster has single-threaded worker processes, one GPU each where there
are GPUs (``CUDA_VISIBLE_DEVICES``), and glibc's adaptive allocator back.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import dask
import torch

from pathsegdiff.errors import ConfigError


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work goes: a running scheduler, or a local cluster of ``workers`` processes."""

    scheduler: str | None = None
    workers: int | None = None
    range_tiles: int | None = None  # tiles per task; None: four batches, rounded up to whole shards
    connect_timeout: float = 5.0  # seconds to reach the scheduler
    wait_workers: float = 120.0  # seconds to wait for a first worker
    drain_timeout: float = 60.0  # after an error: seconds to let running ranges finish their batches

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.workers is None):
            raise ConfigError("give either --scheduler ADDRESS or --workers N (not both)")
        if (self.workers is not None and self.workers < 1) or (self.range_tiles is not None and self.range_tiles < 1):
            raise ConfigError("--workers and the range size must be >= 1")


# dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns glibc's adaptive mmap threshold off:
# every large tensor is mmapped and unmapped again; measured here, the tiny model ran 1.6x slower so.
NO_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _reach(address: str, timeout: float) -> None:
    """One line, fast, when no dask scheduler answers at ``address`` (before a Client hangs on it)."""
    import asyncio
    import socket

    from distributed.comm import connect as dask_connect
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.security import Security

    async def handshake() -> None:  # with the TLS settings of dask's config, as Client uses them
        comm = await dask_connect(address, timeout=timeout, **Security().get_connection_args("client"))
        await comm.close()

    stage = "bad address"
    try:
        scheme, where = parse_address(address)
        if scheme == "tcp":
            stage = f"not reachable within {timeout:g} s"
            socket.create_connection(parse_host_port(where, 8786), timeout=timeout).close()
        stage = "no dask scheduler answered"
        asyncio.run(handshake())
    except Exception as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot reach the dask scheduler at {address}: {stage} ({why}); "
                          "start one ('dask scheduler') or check --scheduler") from None


@contextmanager
def connect(cc: ClusterConfig, device: str = "cpu"):
    """A client of the scheduler at ``cc.scheduler``, or of a local cluster started (and stopped) here."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    if cc.scheduler is not None:
        _reach(cc.scheduler, cc.connect_timeout)
        with Client(cc.scheduler, timeout=cc.connect_timeout, set_as_default=False) as client:
            yield client
        return
    gpus = visible_gpus() if device.startswith("cuda") else []
    options = {"nthreads": 1, "host": "127.0.0.1", "dashboard": False, "silence_logs": logging.ERROR}
    workers = {f"pathsegdiff-{i}": {"cls": Nanny, "options": {  # one GPU per worker process where there are GPUs
        **options, "env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}}} for i in range(cc.workers)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}}
    with dask.config.set(NO_MALLOC_TRIM), \
            SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client
