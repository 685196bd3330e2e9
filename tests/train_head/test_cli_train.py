"""``pathsegdiff train`` and ``evaluate`` through the CLI, including every expected bad input."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from typer.testing import CliRunner

from helpers.synthetic_store import build_store
from pathsegdiff.cli import app, train_cmd
from pathsegdiff.store import open_store
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.fit import TrainConfig

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def expect_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(learnable_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    r = invoke("train", learnable_store, "-o", run, "--head", "linear", "--epochs", "2", "--quiet")
    assert r.exit_code == 0, r.output
    return run, r.output


def test_train_prints_one_result_line_and_writes_the_run(trained):
    run, output = trained
    assert "linear head, test split (8 tiles): mIoU" in output
    assert (run / "results.json").is_file() and (run / "summary.md").is_file() and (run / "run.json").is_file()


def test_evaluate_writes_a_separate_report(trained, learnable_store):
    run, _ = trained
    r = invoke("evaluate", run, "--store", learnable_store, "--split", "val")
    assert r.exit_code == 0, r.output
    assert "val split (8 tiles)" in r.output
    reports = list((run / "eval").glob("*-val/results.json"))
    assert len(reports) == 1
    assert json.loads(reports[0].read_text())["n_tiles"] == 8
    assert json.loads((run / "results.json").read_text())["split"] == "test"  # training results untouched


def test_cli_defaults_match_the_train_config():
    params = inspect.signature(train_cmd).parameters
    d = TrainConfig()
    for name in ("head", "epochs", "batch_size", "lr", "runs", "seed", "device", "patience", "loader_workers", "loss",
                 "focal_gamma", "class_weights"):
        assert params[name].default == getattr(d, name), name
    assert params["dice"].default == d.dice_weight and float(params["label_fraction"].default) == d.label_fraction
    assert (params["augment"].default == "d4") == d.augment and params["head_args"].default is None
    assert "workers" not in params  # DataLoader workers are --loader-workers; --workers is extract's dask processes


def test_store_without_labels(tmp_path):
    where = build_store(tmp_path / "nolabels", n_tiles=4, labels=False)
    expect_error(invoke("train", where, "-o", tmp_path / "run"), "holds no labels")


def test_missing_block_and_timestep(learnable_store, tmp_path):
    expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--blocks", "up1,mid"),
                 "no block 'mid'", "up1, up2")
    expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--timesteps", "50,999"),
                 "no timestep 999")


def test_label_fraction_leaving_no_tile(learnable_store, tmp_path):
    expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--label-fraction", "0.01"),
                 "leaves no tile")
    expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--label-fraction", "abc"),
                 "label fraction")


def test_empty_split(trained, tmp_path):
    run, _ = trained
    no_test = build_store(tmp_path / "notest", n_tiles=10, splits=(6, 4, 0))
    expect_error(invoke("evaluate", run, "--store", no_test, "--split", "test"), "test split has no written tile")


def test_empty_train_split(tmp_path):
    where = build_store(tmp_path / "onlytest", n_tiles=6, splits=(0, 0, 6))
    expect_error(invoke("train", where, "-o", tmp_path / "r"), "train split is empty")


def test_run_dir_holding_another_run(trained, learnable_store, tmp_path):
    run, _ = trained
    expect_error(invoke("train", learnable_store, "-o", run, "--head", "fcn", "--epochs", "1", "--quiet"),
                 "holds a different run", "--overwrite")
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    expect_error(invoke("train", learnable_store, "-o", other, "--overwrite"), "does not hold a pathsegdiff run")
    assert (other / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_run(learnable_store, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", learnable_store, "-o", run, "--head", "linear", "--epochs", "1", "--quiet").exit_code == 0
    r = invoke("train", learnable_store, "-o", run, "--head", "linear", "--epochs", "1", "--seed", "2", "--quiet",
               "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 2
    assert not (run / "runs" / "seed_0").exists()


def test_head_applied_to_a_store_of_another_identity(trained, tmp_path):
    run, _ = trained
    other = build_store(tmp_path / "other", n_tiles=10, splits=(4, 3, 3), weights_sha256="f" * 64)
    expect_error(invoke("evaluate", run, "--store", other), "features differ", "weights_sha256")


def test_head_reads_a_store_of_another_compute_dtype(trained, tmp_path):
    """bf16 features are another store identity (no mixing on resume), but a head may read them."""
    run, _ = trained
    bf16 = build_store(tmp_path / "bf16", n_tiles=10, splits=(4, 3, 3), compute_dtype="bf16")
    r = invoke("evaluate", run, "--store", bf16, "--split", "test")
    assert r.exit_code == 0, r.output
    assert open_store(bf16).identity != load_head(run)[1].store_identity


def test_evaluate_without_a_trained_head(learnable_store, tmp_path):
    expect_error(invoke("evaluate", tmp_path, "--store", learnable_store), "no trained head")


def test_bad_head_and_device(learnable_store, tmp_path):
    expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--head", "unet"), "unknown head 'unet'")
    if not torch.cuda.is_available():
        expect_error(invoke("train", learnable_store, "-o", tmp_path / "r", "--device", "cuda"), "no CUDA device")


def test_a_run_written_before_an_option_existed_is_the_same_run(learnable_store, tmp_path):
    """run.json of an older version lacks options added since (e.g. coefficients): they read as their defaults."""
    run = tmp_path / "run"
    args = ("train", learnable_store, "-o", run, "--head", "linear", "--epochs", "1", "--quiet")
    assert invoke(*args).exit_code == 0
    meta = json.loads((run / "run.json").read_text())
    del meta["config"]["coefficients"]
    (run / "run.json").write_text(json.dumps(meta))
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    meta["config"]["epochs"] = 7  # a real difference still counts
    (run / "run.json").write_text(json.dumps(meta))
    expect_error(invoke(*args), "holds a different run")
