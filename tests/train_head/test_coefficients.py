"""``train --coefficients``: heads trained on a PCA store's coefficients, saved composed onto its features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers.synthetic_store import build_store
from pathsegdiff.cli import app
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.compact import compact_store
from pathsegdiff.store.encodings import Calibration, PCABasis
from pathsegdiff.train_head import coefficients as coef
from pathsegdiff.train_head.checkpoint import build_head, load_head
from pathsegdiff.train_head.heads import HeadConfig

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pca_store(learnable_store, tmp_path_factory):
    """pca4-int8 of the learnable store: up1 keeps 4 of 8 channels, up2 4 of 6."""
    dst = tmp_path_factory.mktemp("pca") / "pca4.zarr"
    compact_store(learnable_store, dst, "pca4-int8", Calibration(tiles=8))
    return str(dst)


def batch(fs, tiles, read):
    return {t: {b: torch.from_numpy(np.stack([read(i, t, b) for i in tiles])).float() for b in fs.blocks}
            for t in fs.timesteps}


def trained_coefficient_head(kind: str, fs, bases) -> tuple:
    """A coefficient head with weights, biases and normalisation statistics away from their defaults."""
    full = HeadConfig(kind, tuple(fs.schema.features.blocks), tuple(fs.timesteps), 3, fs.schema.tile_size,
                      ensemble=3, mlp_hidden=(16, 8))
    torch.manual_seed(0)
    head = build_head(coef.coefficient_config(full, bases))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, v in [*head.named_parameters(), *head.named_buffers()]:
            if not name.endswith("num_batches_tracked"):
                positive = "var" in name or name.endswith("norms.0.weight")
                v.copy_(torch.rand(v.shape, generator=gen) + 0.5 if positive else torch.randn(v.shape, generator=gen))
    return head.eval(), full


@pytest.mark.parametrize("kind", ["fcn", "linear", "mlp"])
def test_composed_head_on_decoded_features_equals_the_coefficient_head(pca_store, kind):
    fs = open_store(pca_store)
    bases = fs.encoding.bases
    head, full = trained_coefficient_head(kind, fs, bases)
    composed = coef.compose_head(head, full, bases)
    tiles = [0, 5, 17, 30]
    with torch.no_grad():
        want = head(batch(fs, tiles, fs.read_coefficients))
        got = composed(batch(fs, tiles, fs.read_features))
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 1e-4 * scale
    # the check is sensitive to the composition: dropping the mean term moves the logits far
    no_mean = {k: PCABasis(np.zeros_like(b.mean), b.components, b.explained) for k, b in bases.items()}
    with torch.no_grad():
        wrong = coef.compose_head(head, full, no_mean)(batch(fs, tiles, fs.read_features))
    assert float((wrong - want).abs().max()) > 1e-2 * scale


def test_the_composed_linear_probe_keeps_an_identity_norm(pca_store):
    fs = open_store(pca_store)
    head, full = trained_coefficient_head("linear", fs, fs.encoding.bases)
    composed = coef.compose_head(head, full, fs.encoding.bases)
    x = torch.randn(2, full.in_channels["up1"], 8, 8)
    assert torch.allclose(composed.norm["up1"](x), x, rtol=1e-6, atol=1e-6)


def test_train_coefficients_through_the_cli_then_evaluate(pca_store, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", pca_store, "-o", run, "--head", "fcn", "--epochs", "3", "--coefficients", "--quiet")
    assert r.exit_code == 0, r.output
    fs = open_store(pca_store)
    record = {"encoding": "pca4-int8", "basis_sha256": fs.schema.features.basis_sha256}
    assert json.loads((run / "run.json").read_text())["coefficients"] == record
    assert json.loads((run / "run.json").read_text())["config"]["coefficients"] is True
    head, meta = load_head(run)
    assert meta.coefficients == record
    # an ordinary head over the store's channels, not its K coefficients
    assert head.project["up1"][0].weight.shape[1] == 8 * 2 and head.project["up2"][0].weight.shape[1] == 6 * 2
    trained = json.loads((run / "results.json").read_text())
    assert trained["miou"] > 0.5  # learnable: the classes are linear in the features
    r = invoke("evaluate", run, "--split", "test")
    assert r.exit_code == 0, r.output
    (report,) = (run / "eval").glob("*-test/results.json")
    assert json.loads(report.read_text())["miou"] == pytest.approx(trained["miou"], abs=1e-6)


def test_a_head_evaluates_on_the_store_in_another_encoding(learnable_store, pca_store, tmp_path):
    """The composed head on the float16 store it was compacted from (what the encoding costs, measured by a
    user), and the reverse; another model's store is still refused."""
    run = tmp_path / "run"
    assert invoke("train", pca_store, "-o", run, "--head", "linear", "--epochs", "3", "--coefficients",
                  "--quiet").exit_code == 0
    r = invoke("evaluate", run, "--store", learnable_store, "--split", "test", "-o", tmp_path / "ev", "--quiet")
    assert r.exit_code == 0, r.output
    on_f16 = json.loads((tmp_path / "ev" / "results.json").read_text())["miou"]
    assert on_f16 == pytest.approx(json.loads((run / "results.json").read_text())["miou"], abs=0.05)
    f16_run = tmp_path / "f16"
    assert invoke("train", learnable_store, "-o", f16_run, "--head", "linear", "--epochs", "2", "--quiet").exit_code == 0
    r = invoke("evaluate", f16_run, "--store", pca_store, "--split", "test", "-o", tmp_path / "ev2", "--quiet")
    assert r.exit_code == 0, r.output
    other = build_store(tmp_path / "other.zarr", weights_sha256="1" * 64)  # the same shapes from other weights
    r = invoke("evaluate", f16_run, "--store", other, "--split", "test", "-o", tmp_path / "ev3", "--quiet")
    assert r.exit_code != 0 and "features differ from those the head was trained on" in r.output
    assert "weights_sha256" in r.output and not (tmp_path / "ev3").exists()


def expect_refused(args, out, *fragments):
    r = invoke(*args)
    assert r.exit_code != 0, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    for f in fragments:
        assert f in lines[0], lines[0]
    assert not out.exists()


def test_a_float16_or_int8_store_is_refused_before_anything_is_written(learnable_store, tmp_path):
    out = tmp_path / "run"
    expect_refused(["train", learnable_store, "-o", out, "--coefficients", "--quiet"], out,
                   learnable_store, "needs a PCA store", "float16", "store compact")
    int8 = tmp_path / "int8.zarr"
    compact_store(learnable_store, int8, "int8")
    expect_refused(["train", int8, "-o", out, "--coefficients", "--quiet"], out, "needs a PCA store", "int8")


def test_a_head_without_a_composing_first_layer_is_refused(pca_store, tmp_path, monkeypatch):
    # every head kind composes today; a kind missing from the table is refused by name
    monkeypatch.delitem(coef.COMPOSERS, "mlp")
    out = tmp_path / "run"
    expect_refused(["train", pca_store, "-o", out, "--head", "mlp", "--coefficients", "--quiet"], out,
                   "the mlp head has no first 1x1 layer", "fcn, linear")


def test_mlp_coefficient_training_is_deterministic_and_saves_a_feature_head(pca_store, tmp_path):
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    cfg = TrainConfig(head="mlp", epochs=1, coefficients=True, head_options={"ensemble": 2, "mlp_hidden": (8,)})
    a = train(pca_store, tmp_path / "a", cfg, progress=False, plots=False)
    b = train(pca_store, tmp_path / "b", cfg, progress=False, plots=False)
    assert a["miou"] == b["miou"]
    head, meta = load_head(tmp_path / "a")
    assert head.first["up2"].shape == (2, 8, 6 * 2) and meta.train["coefficients"] is True
