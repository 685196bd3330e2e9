"""What a new user meets first: flags that look like flags, --version, and errors that say what to do."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff import __version__
from pathsegdiff.cli import app

TILES = Path(__file__).parents[1] / "data" / "he_tiles"
runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_version():
    code, out = run("--version")
    assert code == 0 and out.strip() == f"pathsegdiff {__version__}"


@pytest.mark.parametrize("command", [["store", "info"], ["store", "verify"], ["extract"], ["train"], ["predict"]])
def test_on_off_options_are_shown_as_plain_flags(command):
    code, out = run(*command, "--help")
    assert code == 0 and "--help" in out
    assert "<bool>" not in out and "BOOLEAN" not in out


def test_store_ls_refuses_an_unknown_status(tmp_path):
    from pathsegdiff.store import create_store

    with create_store(tmp_path / "s.zarr", synth.schema(), synth.records()) as w:
        w.write(range(2), synth.tile_batch(range(2)))
    code, out = run("store", "ls", tmp_path / "s.zarr", "--status", "bogus")
    assert code == 1 and "--status 'bogus'" in out and "todo, written, failed" in out
    code, out = run("store", "ls", tmp_path / "s.zarr", "--status", "written")
    assert code == 0 and len(out.strip().splitlines()) == 3  # header + 2 tiles


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_cuda_device_says_what_to_do(tmp_path):
    code, out = run("extract", TILES, "-o", tmp_path / "s.zarr", "--device", "cuda", "--tile-size", "64")
    assert code == 1 and "--device cpu" in out and "CUDA build of torch" in out
    assert not (tmp_path / "s.zarr").exists()


def test_missing_model_and_encoder_files_point_to_the_readme(tmp_path):
    code, out = run("extract", TILES, "-o", tmp_path / "a.zarr", "--model", tmp_path / "brca20x", "--tile-size", "64")
    assert code == 1 and "brca20x: model directory not found" in out and "README" in out
    code, out = run("extract", TILES, "-o", tmp_path / "b.zarr", "--conditioning", f"hipt:{tmp_path / 'vit.pth'}",
                    "--tile-size", "64")
    assert code == 1 and "vit.pth: hipt file not found" in out and "README" in out


def test_a_second_writer_is_refused_before_it_loads_the_model(tmp_path, monkeypatch):
    import pathsegdiff.extract.featurize as featurize
    from pathsegdiff.store.schema import LOCK_NAME

    store = tmp_path / "busy.zarr"
    store.mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}  # a live process
    (store / LOCK_NAME).write_text(json.dumps(owner))

    def no_loading(*a, **kw):
        raise AssertionError("the model was loaded although the store is locked")

    monkeypatch.setattr(featurize, "load_backbone", no_loading)
    code, out = run("extract", TILES, "-o", store, "--tile-size", "64")
    assert code == 1 and "another writer holds the store" in out


def test_copy_to_a_bucket_that_does_not_exist_says_so(tmp_path, s3_env):
    from pathsegdiff.store import create_store

    with create_store(tmp_path / "s.zarr", synth.schema(), synth.records()) as w:
        w.write(range(2), synth.tile_batch(range(2)))
    code, out = run("store", "copy", tmp_path / "s.zarr", "s3://no-such-bucket-pathsegdiff/s.zarr")
    assert code == 1 and "bucket does not exist" in out, out
    assert "free space" not in out
