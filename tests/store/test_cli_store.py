"""The store verbs through typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.store import create_store

runner = CliRunner()


def make(tmp_path):
    path = tmp_path / "s.zarr"
    with create_store(path, synth.schema(), synth.records(), {"model": "synthetic"}) as w:
        w.write(range(5), synth.tile_batch(range(5)))
        w.mark_failed([9], ["unreadable: truncated PNG"])
    return path


def test_help_lists_every_verb():
    out = runner.invoke(app, ["--help"]).output
    assert "store" in out
    out = runner.invoke(app, ["store", "--help"]).output
    for verb in ("info", "verify", "pack", "ls"):
        assert verb in out


def test_info_json(tmp_path):
    r = runner.invoke(app, ["store", "info", str(make(tmp_path)), "--json", "--disk"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["schema_version"] == 1
    assert info["tiles"] == {"total": 12, "written": 5, "todo": 6, "failed": 1}
    assert info["blocks"] == {"up1": [6, 8, 8], "up2": [4, 16, 16]}
    assert info["timesteps"] == [50, 150]
    assert info["identity"] == synth.spec().identity()
    assert info["provenance"]["model"] == "synthetic"
    assert info["bytes_on_disk"] > 0 and info["bytes_per_written_tile"] > 0


def test_info_answers_from_metadata_without_listing_objects(tmp_path, monkeypatch):
    """A store of a million tiles must answer in a second: info reads the table, status and attributes, never a
    listing of the store's objects (the bytes on disk are estimated unless --disk asks for them)."""
    import os

    import zarr.storage

    path = make(tmp_path)
    listed = []
    for module, name in ((os, "scandir"), (os, "walk"), (os, "listdir")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: listed.append(_name) or _real(*a, **k))
    for name in ("list", "list_prefix", "list_dir"):
        real = getattr(zarr.storage.LocalStore, name)
        monkeypatch.setattr(zarr.storage.LocalStore, name,
                            lambda self, *a, _real=real, _name=name: listed.append(_name) or _real(self, *a))
    r = runner.invoke(app, ["store", "info", str(path)])
    assert r.exit_code == 0, r.output
    assert "estimated" in r.output and "--disk" in r.output
    assert not listed, listed
    info = json.loads(runner.invoke(app, ["store", "info", str(path), "--json"]).output)
    assert info["bytes_on_disk"] is None and info["bytes_estimated"] == 5 * info["bytes_per_tile_uncompressed"]
    assert not listed, listed
    r = runner.invoke(app, ["store", "info", str(path), "--disk"])
    assert r.exit_code == 0 and "estimated" not in r.output and listed  # measuring walks every object


def test_ls_reads_only_the_rows_it_shows(tmp_path):
    path = make(tmp_path)
    r = runner.invoke(app, ["store", "ls", str(path), "--limit", "3"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "index\ttile_id\tslide_id\tx\ty\tsplit\tstatus" and len(lines) == 4
    assert lines[1].split("\t") == ["0", "tile000", "slide0", "0", "0", "train", "written"]
    r = runner.invoke(app, ["store", "ls", str(path), "--status", "todo", "--limit", "0"])
    assert [ln.split("\t")[0] for ln in r.output.splitlines()[1:]] == ["5", "6", "7", "8", "10", "11"]
    r = runner.invoke(app, ["store", "ls", str(path), "--status", "done"])
    assert r.exit_code == 1 and "todo, written, failed" in r.output


def test_info_text_verify_pack_ls(tmp_path):
    path = make(tmp_path)
    r = runner.invoke(app, ["store", "info", str(path)])
    assert r.exit_code == 0 and "5/12 written" in r.output and "1 failed" in r.output
    r = runner.invoke(app, ["store", "verify", str(path)])
    assert r.exit_code == 0 and "5 written tiles checked of 12: ok" in r.output
    out = tmp_path / "s.zip"
    r = runner.invoke(app, ["store", "pack", str(path), str(out)])
    assert r.exit_code == 0 and out.exists()
    r = runner.invoke(app, ["store", "pack", str(path), str(out)])
    assert r.exit_code == 1 and "--overwrite" in r.output
    r = runner.invoke(app, ["store", "verify", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["store", "ls", str(out), "--status", "failed"])
    assert r.exit_code == 0 and "tile009" in r.output and "tile000" not in r.output


def test_info_from_the_table_runs_equals_info_from_the_columns(tmp_path):
    """store info reads the slides from the runs kept beside the table (schema.RUNS_ATTR), also after an append;
    a store made before the runs reads the columns, with the same answer."""
    import zarr

    from pathsegdiff.store import open_or_create
    from pathsegdiff.store.commands.info import store_info

    path = tmp_path / "s.zarr"
    with open_or_create(path, synth.schema(n_tiles=None), synth.records(8)) as w:
        w.write(range(3), synth.tile_batch(range(3)))
    with open_or_create(path, synth.schema(n_tiles=None), synth.records(12)) as w:  # grows by 4 tiles
        w.mark_failed([10], ["unreadable"])
    runs = zarr.open_group(str(path), mode="r")["tiles"].attrs["runs"]
    assert [r[3:5] for r in runs] == [[i, i + 1] for i in range(12)]  # slides alternate: a run per tile
    fast = store_info(path)
    zarr.open_group(str(path), mode="r+")["tiles"].attrs.put({})  # as a store made before the runs
    slow = store_info(path)
    assert fast["slides"] == slow["slides"] and fast["splits"] == slow["splits"] == {"test": 4, "train": 4, "val": 4}
    assert [d["tiles"] for d in fast["slides"]] == [6, 6] and fast["slides"][0]["written"] == 2
    assert fast["slides"][0]["failed"] == 1 and fast["slides"][0]["splits"] == ["test", "train", "val"]
