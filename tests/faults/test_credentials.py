"""Credentials for a remote store never reach the store, the CLI's output, the logs or an error message.

Runs against a real S3-compatible server on loopback (moto, fixtures in
tests/conftest.py) with a distinctive secret key; for the wrong-credentials
case the server is switched to checking signatures for that test only.
"""

from __future__ import annotations

import logging
import urllib.request

import pytest
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.errors import StoreAccessError, StoreReadOnlyError
from pathsegdiff.store import create_store, open_store

SECRET = "Cx9-CANARY-secret-7f3a9e1b"
TOKEN = "Tk-CANARY-session-51d0c2"
runner = CliRunner()


@pytest.fixture
def canary_env(s3_env, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_env
    s3fs.S3FileSystem.clear_instance_cache()


def leaks(text: str) -> bool:
    return SECRET in text or TOKEN in text


def capture_logs(caplog) -> None:
    """Everything at INFO, and DEBUG from this package and the storage layers it drives.

    botocore's own DEBUG records are left out on purpose: at DEBUG botocore logs
    request headers, the session token among them (not the secret key), as any
    boto3 program does when a user turns DEBUG on for it; nothing here does.
    """
    caplog.set_level(logging.INFO)
    for name in ("pathsegdiff", "zarr", "s3fs", "fsspec", "aiobotocore"):
        caplog.set_level(logging.DEBUG, logger=name)


def test_secret_is_in_no_object_output_or_log(canary_env, s3_server, tmp_path, caplog):
    import s3fs

    capture_logs(caplog)
    url = f"s3://{canary_env}/shared.zarr"
    with create_store(url, synth.schema(), synth.records(), {"source": "tests", "model": "tiny"}) as w:
        w.write(range(4), synth.tile_batch(range(4)))
    outputs = []
    for args in (["store", "info", url], ["store", "info", "--json", url], ["store", "ls", url],
                 ["store", "verify", url], ["store", "copy", url, str(tmp_path / "local.zarr")],
                 ["store", "pack", url, str(tmp_path / "s.zip")], ["--debug", "store", "info", url]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
        outputs.append(r.output)
    assert not any(leaks(o) for o in outputs)

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    objects = fs.find(f"{canary_env}/shared.zarr")
    assert len(objects) > 20
    assert not [o for o in objects if leaks(fs.cat_file(o).decode("latin-1"))]
    local = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert local and not [p for p in local if leaks(p.read_bytes().decode("latin-1"))]
    assert not leaks(repr(open_store(url).provenance)) and not leaks(repr(open_store(url).meta))
    assert caplog.records and not [r for r in caplog.records if leaks(r.getMessage())]


@pytest.fixture
def signatures_checked(s3_server):
    """moto checks credentials (against its IAM users: there are none) until the test ends."""

    def post(value: str) -> None:
        req = urllib.request.Request(f"{s3_server}/moto-api/reset-auth", data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    post("0")
    try:
        yield
    finally:
        post("inf")


def test_wrong_credentials_give_one_line_naming_the_url_not_the_secret(canary_env, signatures_checked, tmp_path,
                                                                      caplog):
    capture_logs(caplog)
    url = f"s3://{canary_env}/team.zarr"
    with pytest.raises(StoreAccessError) as err:
        open_store(url)
    msg = str(err.value)
    assert url in msg and "access denied" in msg and "credentials" in msg and "\n" not in msg
    assert not leaks(msg)
    with pytest.raises(StoreReadOnlyError) as err:  # writing with them is refused the same way
        create_store(url, synth.schema(), synth.records())
    assert url in str(err.value) and not leaks(str(err.value))
    for args in (["store", "info", url], ["store", "verify", url], ["store", "copy", url, str(tmp_path / "c.zarr")],
                 ["store", "copy", str(tmp_path / "nothing.zarr"), url]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (args, r.output)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and not leaks(r.output), r.output
    assert not [r for r in caplog.records if leaks(r.getMessage())]
