"""store copy between directory, zip and S3, with a manifest a teammate can check."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from helpers import synth
from helpers.stores import store_bytes
from pathsegdiff.cli import app
from pathsegdiff.errors import StoreExistsError
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.copy import MANIFEST, check_manifest, copy_store

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    return synth.written_store(tmp_path / "s.zarr", 7)


def same_tiles(a, b):
    fa, fb = open_store(a), open_store(b)
    assert list(fa.written()) == list(fb.written())
    for i in fa.written():
        ta, tb = fa.read_tile(i), fb.read_tile(i)
        for t in fa.timesteps:
            for blk in fa.blocks:
                assert ta.features[t][blk].tobytes() == tb.features[t][blk].tobytes()


def test_dir_to_zip_to_dir_round_trip_is_byte_identical(store, tmp_path):
    copy_store(store, tmp_path / "c.zip")
    assert check_manifest(tmp_path / "c.zip") == []
    copy_store(tmp_path / "c.zip", tmp_path / "back.zarr")
    back = store_bytes(tmp_path / "back.zarr")
    assert back.pop(MANIFEST)
    assert back == store_bytes(store)


def test_copy_through_s3(store, tmp_path, s3_env):
    url = f"s3://{s3_env}/shared.zarr"
    r = runner.invoke(app, ["store", "copy", str(store), url])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["store", "verify", url, "--manifest"]).exit_code == 0
    copy_store(url, tmp_path / "local.zarr")
    same_tiles(store, tmp_path / "local.zarr")
    back = store_bytes(tmp_path / "local.zarr")
    back.pop(MANIFEST)
    assert back == store_bytes(store)


def test_manifest_finds_a_changed_object(store, tmp_path):
    dst = tmp_path / "c.zarr"
    copy_store(store, dst)
    chunk = dst / "ssl" / "c.3.0"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 1
    chunk.write_bytes(bytes(data))
    assert check_manifest(dst) == ["ssl/c.3.0: checksum differs"]
    r = runner.invoke(app, ["store", "verify", str(dst), "--manifest"])
    assert r.exit_code == 1 and "ssl/c.3.0: checksum differs" in r.output


def test_destination_that_exists_needs_overwrite(store, tmp_path):
    dst = tmp_path / "c.zarr"
    copy_store(store, dst)
    with pytest.raises(StoreExistsError, match="--overwrite"):
        copy_store(store, dst)
    copy_store(store, dst, overwrite=True)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(Exception):
        copy_store(store, tmp_path / "photos", overwrite=True)
    assert (tmp_path / "photos" / "a.jpg").exists()


def test_crafted_zip_entry_cannot_escape_the_destination(store, tmp_path):
    import zipfile

    from pathsegdiff.errors import CorruptStoreError

    evil = tmp_path / "evil.zip"
    copy_store(store, evil)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("../../escaped.txt", "pwned")
    with pytest.raises(CorruptStoreError, match="escaped.txt"):
        copy_store(evil, tmp_path / "out" / "c.zarr")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "escaped.txt").exists()
