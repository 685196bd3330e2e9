"""A bucket the user may read but not write: reading works, every write is one clear line, nothing lands.

moto's loopback server enforces IAM for this test: a user whose only policy
is read access on the bucket, created before the server starts checking
signatures.

On AWS a HEAD of an object is authorised by s3:GetObject and a listing by
s3:ListBucket (there are no s3:HeadObject or s3:ListObjectsV2 actions), so
the project's reads need nothing more than those two: the project's read path
is right.  moto 5.2 names the action after the API operation instead and
checks HEAD against "s3:HeadObject" and a listing against "s3:ListObjectsV2"
(a moto bug, the cause of the 403 on HEAD); the policy also lists those two
names so the test runs on moto.  On AWS a name that is no action grants
nothing, so the same policy is read-only there.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.store import create_store

TILES = Path(__file__).parents[1] / "data" / "he_tiles"
runner = CliRunner()


def _reset_auth(server: str, value: str) -> None:
    req = urllib.request.Request(f"{server}/moto-api/reset-auth", data=value.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture
def read_only_user(s3_env, s3_server, monkeypatch, tmp_path):
    """(bucket, existing store URL) with the environment holding a read-only user's keys."""
    import boto3
    import s3fs

    bucket = s3_env
    url = f"s3://{bucket}/shared.zarr"
    with create_store(url, synth.schema(), synth.records()) as w:
        w.write(range(4), synth.tile_batch(range(4)))
    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    name = f"reader-{bucket}"
    iam.create_user(UserName=name)
    read_actions = ["s3:GetObject", "s3:ListBucket",
                    "s3:HeadObject", "s3:ListObjectsV2"]  # the last two for moto 5.2 only: see the docstring
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": read_actions,
              "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
    iam.put_user_policy(UserName=name, PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.chdir(tmp_path)
    s3fs.S3FileSystem.clear_instance_cache()
    _reset_auth(s3_server, "0")
    try:
        yield bucket, url
    finally:
        _reset_auth(s3_server, "inf")
        s3fs.S3FileSystem.clear_instance_cache()


def _objects(bucket: str) -> set[str]:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return set(s3fs.S3FileSystem().find(bucket))


def test_read_only_bucket_reads_and_refuses_writes_on_one_line(read_only_user, tmp_path):
    bucket, url = read_only_user
    r = runner.invoke(app, ["store", "verify", url])
    assert r.exit_code == 0, r.output  # reading is allowed
    before = _objects(bucket)
    local = tmp_path / "local.zarr"
    assert runner.invoke(app, ["store", "copy", url, str(local)]).exit_code == 0
    for argv in (["store", "copy", str(local), f"s3://{bucket}/copy.zarr"],
                 ["extract", str(TILES), "-o", f"s3://{bucket}/new.zarr", "--tile-size", "64", "--quiet", "--limit", "2"]):
        r = runner.invoke(app, argv)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (argv, r.output)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, r.output
        assert f"s3://{bucket}/" in errors[0] and ("denied" in errors[0] or "read-only" in errors[0]), errors[0]
    assert _objects(bucket) == before  # nothing landed, nothing was removed
