"""Distributed extraction on a real dask cluster (worker processes on this machine).

The reference is the single-process store of conftest.py (same tiles, same
arguments, one torch thread); the distributed stores must match it byte for
byte in every data object.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time

import numpy as np
import pytest

from helpers.he_tiles import TILES, extract
from helpers.stores import data_bytes
from pathsegdiff.tiles.datasets import SourceConfig, open_source
from pathsegdiff.extract.run.cluster import ClusterConfig, connect
from pathsegdiff.extract.run.distributed import ranges, run_distributed
from pathsegdiff.extract.run.config import ExtractConfig
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.verify import verify_store

pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: as the reference store was made


@pytest.fixture(scope="module")
def client(request):
    """A local cluster of two worker processes, one thread each, shared by this module.

    The workers inherit the loopback S3 server's endpoint and credentials, as a
    ``--workers`` cluster inherits the coordinator's environment.
    """
    with pytest.MonkeyPatch.context() as mp:
        try:
            mp.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("s3_server"))
            for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                               ("AWS_DEFAULT_REGION", "us-east-1")):
                mp.setenv(var, value)
        except pytest.skip.Exception:  # no moto or s3fs: the S3 test skips, the others run
            pass
        with connect(ClusterConfig(workers=2)) as c:
            yield c


def one_error_line(output: str) -> str:
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def test_ranges_follow_the_shard_grid():
    todo = np.array([0, 1, 2, 5, 6, 7, 8, 9, 17, 30, 31])
    assert [list(r) for r in ranges(todo, 8)] == [[0, 1, 2, 5, 6, 7], [8, 9], [17], [30, 31]]
    assert ranges(np.array([], dtype=np.int64), 8) == []


def test_two_workers_give_the_single_process_store_and_resume(client, reference, tmp_path):
    out, address = tmp_path / "d.zarr", client.scheduler.address
    code, output = extract(TILES, out, "--batch-size", "4", "--scheduler", address, "--limit", "10")
    assert code == 0 and "10 tiles written" in output, output
    code, output = extract(TILES, out, "--batch-size", "4", "--scheduler", address)
    assert code == 0, output
    assert "on 2 workers" in output and "26 tiles written, 10 already written" in output
    assert data_bytes(out) == data_bytes(reference)
    prov = open_store(out).provenance
    assert prov["distributed"]["workers"] == 2 and prov["torch_threads"] == 1
    assert verify_store(out).ok


def test_two_workers_fill_a_sharded_store_on_s3(client, reference, s3_env):
    url = f"s3://{s3_env}/d.zarr"
    code, output = extract(TILES, url, "--batch-size", "4", "--shard-tiles", "8", "--scheduler", client.scheduler.address)
    assert code == 0 and "3 ranges of up to 16 tiles on 2 workers" in output, output
    a, b = open_store(url).to_xarray().load(), open_store(reference).to_xarray().load()
    assert a.equals(b) and len(open_store(url).written()) == 36
    assert verify_store(url).ok


def test_a_worker_killed_mid_range_still_gives_the_same_store(client, reference, tmp_path):
    out = tmp_path / "k.zarr"
    source = open_source(TILES, SourceConfig(tile_size=64, stride=32))
    cfg = ExtractConfig(batch_size=2, threads=1)
    cluster = ClusterConfig(scheduler=client.scheduler.address, range_tiles=18)  # one range per worker
    result, errors = {}, []

    def run():
        try:
            result["summary"] = run_distributed(source, out, cfg, cluster, progress=False, echo=lambda line: None)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    pids = client.run(os.getpid)
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and thread.is_alive():
        if any((out / "rgb").glob("c.*")):  # a worker has written chunks of its range
            busy = [a for a, keys in client.processing().items() if any("pathsegdiff-range" in k for k in keys)]
            if busy:
                written_before = len(open_store(out).written())
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed = busy[0]
        time.sleep(0.01)
    thread.join(timeout=180)
    assert not errors, errors
    assert killed is not None, "the run ended before a worker could be killed"
    assert written_before < 36
    assert result["summary"].written == 36
    assert verify_store(out).ok
    assert data_bytes(out) == data_bytes(reference)


def test_unreachable_scheduler_is_one_line_and_no_store(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    t = time.perf_counter()
    code, output = extract(TILES, tmp_path / "u.zarr", "--scheduler", address)
    assert code == 1 and address in one_error_line(output)
    assert time.perf_counter() - t < 10
    assert not (tmp_path / "u.zarr").exists()
    code, output = extract(TILES, tmp_path / "u.zarr", "--scheduler", address, "--workers", "2")
    assert code == 1 and "--scheduler" in one_error_line(output)


def test_a_worker_without_the_model_is_named(client, tmp_path):
    missing = tmp_path / "no-such-model"
    code, output = extract(TILES, tmp_path / "m.zarr", "--scheduler", client.scheduler.address, "--model", missing)
    line = one_error_line(output)
    assert code == 1 and "no-such-model" in line and "worker tcp://127.0.0.1:" in line
    assert not (tmp_path / "m.zarr").exists()


def test_unreadable_tiles_stop_the_run_or_are_recorded_by_the_coordinator(client, tmp_path):
    src = tmp_path / "tiles"
    shutil.copytree(TILES, src)
    bad = src / "images" / "target_image_x400_y300.png"
    bad.write_bytes(bad.read_bytes()[:2000])  # header intact, pixels truncated
    address = client.scheduler.address
    code, output = extract(src, tmp_path / "a.zarr", "--batch-size", "4", "--scheduler", address)
    line = one_error_line(output)
    assert code == 1 and "target_image_x400_y300.png" in line and "--skip-errors" in line and "worker tcp://" in line
    assert verify_store(tmp_path / "a.zarr").ok and len(open_store(tmp_path / "a.zarr").written()) < 36
    code, output = extract(src, tmp_path / "b.zarr", "--batch-size", "4", "--scheduler", address, "--skip-errors")
    assert code == 0 and "30 tiles written" in output and "6 failed" in output, output
    fs = open_store(tmp_path / "b.zarr")
    assert len(fs.fail_reasons()) == 6 and len(fs.written()) == 30
    assert (tmp_path / "b.zarr.errors.log").read_text().count("\n") == 6
