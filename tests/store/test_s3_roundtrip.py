"""A store on S3 end to end, against a real S3-compatible server on loopback (moto, tests/conftest.py).

Extract into s3:// (sharded, as for remote writing), train a head reading from
it, verify it, copy it to a directory (every object identical), and check
that its tiles equal a local single-process extraction.  Then the failures:
the server going away in the middle of a write, and wrong credentials.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.store import open_store

TILES = Path(__file__).parents[1] / "data" / "he_tiles"
ARGS = ["--tile-size", "64", "--stride", "32", "--batch-size", "4", "--quiet"]  # 36 tiles
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def invoke(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "s.zarr"
    code, output = invoke("extract", TILES, "-o", out, *ARGS)
    assert code == 0, output
    return out


def same_data(a, b) -> bool:
    """Every array of two stores holds the same values, whatever their layout (shards or not)."""
    da, db = open_store(a).to_xarray().load(), open_store(b).to_xarray().load()
    return da.equals(db) and list(open_store(a).written()) == list(range(da.sizes["tile"]))


def test_extract_train_verify_copy_through_s3(s3_env, s3_server, local, tmp_path):
    import s3fs

    url = f"s3://{s3_env}/features.zarr"
    code, output = invoke("extract", TILES, "-o", url, *ARGS, "--shard-tiles", "4")
    assert code == 0, output
    code, output = invoke("train", url, "-o", tmp_path / "run", "--head", "linear", "--epochs", "1", "--quiet")
    assert code == 0, output
    assert (tmp_path / "run" / "results.json").is_file()
    code, output = invoke("store", "verify", url)
    assert code == 0 and "36 written tiles checked of 36: ok" in output, output
    code, output = invoke("store", "copy", url, tmp_path / "copy.zarr")
    assert code == 0, output

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    prefix = f"{s3_env}/features.zarr/"
    remote = {key.removeprefix(prefix): fs.cat_file(key) for key in fs.find(prefix)}
    copied = {p.relative_to(tmp_path / "copy.zarr").as_posix(): p.read_bytes()
              for p in (tmp_path / "copy.zarr").rglob("*") if p.is_file()}
    assert copied.pop("MANIFEST.sha256")
    assert copied == remote
    # 9 shards of 4 tiles per tile array, instead of 36 objects each
    assert len([k for k in remote if k.startswith("features/t50/up1/c.")]) == 9
    assert same_data(tmp_path / "copy.zarr", local)


class _ServerDies:
    """The he_tiles folder; the S3 server goes away while tile ``at`` is decoded (mid-run, mid-write)."""

    def __init__(self, server, at: int):
        from pathsegdiff.tiles.datasets import SourceConfig, open_source

        self.inner, self.server, self.at = open_source(TILES, SourceConfig(tile_size=64, stride=32)), server, at
        self.records, self.tile_size, self.class_names = self.inner.records, 64, self.inner.class_names

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int):
        if i == self.at and self.server is not None:
            self.server.stop()
            self.server._server.server_close()  # refuse connections, as a server that is gone does
            self.server = None
        return self.inner.load(i)

    def describe(self) -> dict:
        return {"kind": "server-dies"}


def test_server_gone_mid_write_leaves_a_consistent_store_and_a_rerun_completes_it(s3_env, local, monkeypatch):
    from moto.server import ThreadedMotoServer

    from pathsegdiff.errors import PathsegdiffError
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.store.commands.verify import verify_store

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail in seconds, not after botocore's default retries
    url = f"s3://{s3_env}/flaky.zarr"  # the bucket lives in moto's memory, shared by both servers
    cfg = ExtractConfig(batch_size=4, decode_workers=0)
    with pytest.raises(PathsegdiffError) as err:
        run_extraction(_ServerDies(server, at=14), url, cfg, progress=False, echo=lambda line: None)
    assert url in str(err.value) and "\n" not in str(err.value)

    again = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    again.start()
    try:
        fs = open_store(url)
        assert 0 < len(fs.written()) < 36
        assert verify_store(url).ok  # what the status says is written is all there
        code, output = invoke("extract", TILES, "-o", url, *ARGS)
        assert code == 0 and "already written" in output, output
        assert same_data(url, local)
    finally:
        again.stop()


def test_wrong_credentials_refuse_the_extraction_on_one_line(s3_env, s3_server, tmp_path):
    def auth(value: str) -> None:  # moto checks signatures (against no IAM user) while "0"
        req = urllib.request.Request(f"{s3_server}/moto-api/reset-auth", data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    url = f"s3://{s3_env}/denied.zarr"
    auth("0")
    try:
        code, output = invoke("extract", TILES, "-o", url, *ARGS)
    finally:
        auth("inf")
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(errors) == 1 and url in errors[0] and "credentials" in errors[0], output
