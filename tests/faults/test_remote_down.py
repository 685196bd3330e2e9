"""A remote store whose server cannot be reached: every verb that reads it says so on one line.

The endpoint is a loopback port nothing listens on, so the S3 client's own
exception (botocore's EndpointConnectionError, not an OSError) reaches the CLI.
"""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from pathsegdiff.cli import app

SECRET = "Zq7-CANARY-down-4d1e"
runner = CliRunner()


@pytest.fixture
def dead_endpoint(monkeypatch, tmp_path):
    import s3fs

    with socket.socket() as s:  # a free port, closed again: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    s3fs.S3FileSystem.clear_instance_cache()
    yield port
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("argv", [
    ["store", "verify", "s3://lab/bcss.zarr"],
    ["store", "info", "s3://lab/bcss.zarr"],
    ["train", "s3://lab/bcss.zarr", "-o", "run"],
])
def test_unreachable_server_is_one_line_and_exit_1(dead_endpoint, argv):
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [line for line in r.output.splitlines() if "error:" in line]
    assert len(errors) == 1, r.output
    assert str(dead_endpoint) in errors[0] and "Traceback" not in r.output
    assert SECRET not in r.output
