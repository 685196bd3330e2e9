"""``train --synthetic include|exclude|only`` on a store holding real and synthetic tiles and on a real store
trained together with a synthetic one: the console line, results.json, summary.md and run.json say how many
synthetic tiles the run trained on; validation and test are the same real tiles whatever the choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers.origin_stores import origin_store
from pathsegdiff.cli import app
from pathsegdiff.store import open_store

runner = CliRunner()
FAST = ["--head", "linear", "--epochs", "1", "--batch-size", "8", "--quiet"]
REAL, SYNTHETIC = (12, 4, 4), 6


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("origin")
    return {"mixed": origin_store(root / "mixed.zarr", REAL, SYNTHETIC),
            "real": origin_store(root / "real.zarr", REAL, 0, seed=1),
            "gen": origin_store(root / "gen.zarr", (0, 0, 0), SYNTHETIC, seed=2)}


def _train(stores: list[str], out: Path, *extra: str) -> tuple[str, dict]:
    r = runner.invoke(app, ["train", *stores, "-o", str(out), *FAST, *extra])
    assert r.exit_code == 0, r.output
    return r.output, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("choice, trained, synthetic", [("include", 18, 6), ("exclude", 12, 0), ("only", 6, 6)])
def test_the_run_says_how_many_synthetic_tiles_it_trained_on(stores, tmp_path, choice, trained, synthetic):
    out = tmp_path / "run"
    output, results = _train([stores["mixed"]], out, "--synthetic", choice)
    assert f"training on {trained} tiles, {synthetic} of them synthetic (--synthetic {choice}; the stores hold " \
           f"{SYNTHETIC} written synthetic tiles" in output
    assert output.strip().splitlines()[-1].endswith(f"; trained on {trained} tiles, {synthetic} of them synthetic "
                                                    f"(--synthetic {choice})")
    assert (results["synthetic"], results["n_train_tiles"], results["n_synthetic_train_tiles"],
            results["n_synthetic_tiles"]) == (choice, trained, synthetic, SYNTHETIC)
    assert (results["split"], results["n_tiles"], results["n_val_tiles"], results["val_source"]) == \
        ("test", REAL[2], REAL[1], "store")  # the same real val and test tiles whatever the choice
    summary = (out / "summary.md").read_text()
    assert f"- synthetic tiles trained on: {synthetic} of the {trained} train tiles (`--synthetic {choice}`; the " \
           f"stores hold {SYNTHETIC}, never used for validation or test)" in summary
    assert json.loads((out / "run.json").read_text())["config"]["synthetic"] == choice  # part of the run's config


def test_a_real_store_trains_together_with_a_synthetic_one(stores, tmp_path):
    out = tmp_path / "run"
    output, results = _train([stores["real"], stores["gen"]], out, "--class-weights", "auto")
    assert (results["n_train_tiles"], results["n_synthetic_train_tiles"]) == (18, 6)
    assert results["n_tiles"] == REAL[2] and results["n_val_tiles"] == REAL[1]
    # auto class weights: the inverse pixel frequencies of the tiles trained on, the synthetic ones included
    pixels = np.concatenate([open_store(stores["real"]).array("labels")[:REAL[0]].ravel(),
                             open_store(stores["gen"]).array("labels")[:].ravel()])
    freq = np.bincount(pixels, minlength=3)[:3] / len(pixels)
    expected = (1 / freq) / (1 / freq).mean()
    np.testing.assert_allclose(json.loads((out / "run.json").read_text())["class_weights_used"], expected,
                               rtol=1e-6)
    # another choice is another run: refused in that folder unless --overwrite
    r = runner.invoke(app, ["train", stores["real"], stores["gen"], "-o", str(out), *FAST, "--class-weights",
                            "auto", "--synthetic", "exclude"])
    assert r.exit_code == 1 and "holds a different run; pass --overwrite" in r.output, r.output


def test_a_run_on_real_tiles_alone_says_nothing_more(stores, tmp_path):
    output, results = _train([stores["real"]], tmp_path / "run")
    assert "synthetic" not in output.replace(str(tmp_path), "")
    assert (results["synthetic"], results["n_synthetic_train_tiles"], results["n_synthetic_tiles"]) == \
        ("include", 0, 0)
    assert "synthetic" not in (tmp_path / "run" / "summary.md").read_text()
    r = runner.invoke(app, ["train", stores["real"], "-o", str(tmp_path / "only"), *FAST, "--synthetic", "only"])
    assert r.exit_code == 1 and "--synthetic only: the stores hold no written synthetic tile" in r.output
    r = runner.invoke(app, ["train", stores["real"], "-o", str(tmp_path / "x"), *FAST, "--synthetic", "all"])
    assert r.exit_code == 1 and "--synthetic 'all': choose include, exclude or only" in r.output
    assert not (tmp_path / "only").exists() and not (tmp_path / "x").exists()


def test_help_names_the_default():
    r = runner.invoke(app, ["train", "--help"], terminal_width=400)
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "--synthetic SYNTHETIC" in text and "include (the default" in text and "[default: include]" in text
