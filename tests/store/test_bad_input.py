"""Bad stores give one clear error naming the path and the problem; the CLI exits non-zero without a traceback."""

from __future__ import annotations

import json
import zipfile

import pytest
from typer.testing import CliRunner

from helpers import synth
from helpers.stores import damage as damage_object
from pathsegdiff.cli import app
from pathsegdiff.errors import CorruptStoreError, NotAStoreError, SchemaVersionError, StoreNotFoundError
from pathsegdiff.store import create_store, open_store
from pathsegdiff.store.commands.verify import verify_store

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    return synth.written_store(tmp_path / "s.zarr", 6)


def chunk(store, name, tile):
    return store / name / f"c.{tile}.0.0.0" if name.startswith("features") else None


def cli(*args):
    r = runner.invoke(app, list(map(str, args)))
    return r.exit_code, r.output


def assert_one_line_error(code, out, *needles):
    assert code != 0
    err = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(err) == 1, out
    assert "Traceback" not in out
    for n in needles:
        assert str(n) in err[0], (n, err[0])


def test_missing_path(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    assert_one_line_error(*cli("store", "info", tmp_path / "nope.zarr"), "nope.zarr", "no such store")


def test_plain_directory_and_plain_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*cli("store", "info", tmp_path / "empty"), "empty", "not a pathsegdiff store")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(*cli("store", "info", tmp_path / "notes.txt"), "notes.txt", "not a store")


def test_zarr_group_that_is_not_ours(tmp_path):
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("a", shape=(2,), dtype="i4")
    with pytest.raises(NotAStoreError, match="not a pathsegdiff store"):
        open_store(tmp_path / "other.zarr")


def test_zip_that_is_not_a_store(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("readme.txt", "not a store")
    assert_one_line_error(*cli("store", "info", tmp_path / "x.zip"), "x.zip", "not a pathsegdiff store")
    (tmp_path / "y.zip").write_bytes(b"PK but not really")
    assert_one_line_error(*cli("store", "verify", tmp_path / "y.zip"), "y.zip", "not a zip")


def test_newer_schema_version(store):
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["pathsegdiff"]["schema_version"] = 99
    (store / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError, match="version 99 is newer"):
        open_store(store)
    assert_one_line_error(*cli("store", "info", store), str(store), "upgrade pathsegdiff")


def test_damaged_root_metadata(store):
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    with pytest.raises(CorruptStoreError, match="zarr.json"):
        open_store(store)
    code, out = cli("store", "verify", store)
    assert code == 1 and "zarr.json" in out


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_chunk_is_named_by_verify(store, damage):
    path = chunk(store, "features/t150/up2", 4)
    damage_object(path, damage)
    rep = verify_store(store)
    assert not rep.ok
    assert list(rep.problems) == ["tile004"]
    assert rep.damaged_indices == [4]
    code, out = cli("store", "verify", store)
    assert code == 1
    assert "tile004: features/t150/up2" in out
    with pytest.raises(CorruptStoreError, match="features/t150/up2"):  # an error, never wrong numbers
        open_store(store).read_tile(4)
    assert open_store(store).read_tile(3).features[150]["up2"].shape == (4, 16, 16)


def test_all_zero_tile_is_stored_not_skipped(tmp_path):
    """zarr skips chunks equal to the fill value by default; a written tile must own all its chunks."""
    path = tmp_path / "z.zarr"
    batch = synth.tile_batch([0])
    for t in batch.features:
        for b in batch.features[t]:
            batch.features[t][b][:] = 0
    batch.labels[:] = 0
    batch.rgb[:] = 0
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write([0], batch)
    assert verify_store(path).ok


def test_non_finite_features_are_refused_and_nothing_marked(tmp_path):
    from pathsegdiff.errors import SchemaError

    path = tmp_path / "n.zarr"
    batch = synth.tile_batch([0, 1])
    batch.features[50]["up1"][1, 0, 0, 0] = float("nan")
    with create_store(path, synth.schema(), synth.records()) as w:
        with pytest.raises(SchemaError, match="non-finite.*tile001"):
            w.write([0, 1], batch)
    assert len(open_store(path).written()) == 0


def test_labels_outside_classes_are_refused(tmp_path):
    from pathsegdiff.errors import SchemaError

    batch = synth.tile_batch([2])
    batch.labels[0, 5, 5] = 7
    with create_store(tmp_path / "l.zarr", synth.schema(), synth.records()) as w:
        with pytest.raises(SchemaError, match="labels outside classes.*tile002"):
            w.write([2], batch)
