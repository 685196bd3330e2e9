"""Shared fixtures: small stores, seeded data, and a loopback S3 server."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest

# Keep BLAS/torch from oversubscribing the 2-core CI machine: one thread per process when pytest-xdist runs
# a worker per core (make test), two when the suite runs in one process.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


def _bad_inputs():
    """tests/data/make_bad_inputs.py as a module (tests/data is not a package)."""
    spec = importlib.util.spec_from_file_location("make_bad_inputs", Path(__file__).parent / "data" / "make_bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The bad-input corpus, made afresh for each test module: (root, manifest)."""
    root = tmp_path_factory.mktemp("corpus")
    return root, _bad_inputs().make_bad_inputs(root)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """The corpus's model directories only (malicious checkpoints among them): (root, manifest)."""
    root = tmp_path_factory.mktemp("models")
    return root, _bad_inputs().model_dirs(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials and endpoint in the usual environment variables, plus a fresh bucket."""
    import uuid

    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    bucket = f"b{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    return bucket


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for every run compared in a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    On the CPU the features depend on torch's intra-op thread count (tiny model,
    fp32: up to 1e-5 apart between 1 and 2 threads, enough to flip float16 bits),
    and other test modules' fixtures change it for the whole process.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

