"""The store verbs through typer's CliRunner."""

from __future__ import annotations

import json

import synth
from typer.testing import CliRunner

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
    r = runner.invoke(app, ["store", "info", str(make(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["schema_version"] == 1
    assert info["tiles"] == {"total": 12, "written": 5, "todo": 6, "failed": 1}
    assert info["blocks"] == {"up1": [6, 8, 8], "up2": [4, 16, 16]}
    assert info["timesteps"] == [50, 150]
    assert info["identity"] == synth.spec().identity()
    assert info["provenance"]["model"] == "synthetic"
    assert info["bytes_on_disk"] > 0 and info["bytes_per_written_tile"] > 0


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
