"""Evaluation on a PCA store reads the coefficients through the composed head: the decoding path's logits and labels.

A head over the features ``x = C^T c + m`` composed onto the coefficients ``c``
(``coefficients.coefficient_head``) must give the logits the head gives on
the decoded features, for every built-in kind and both PCA presets; evaluate
takes that path by default, records it, and gives the decoding path's metrics;
a plug-in head decodes and says so in one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers.heads import store_head
from pathsegdiff.errors import ConfigError, SchemaError
from pathsegdiff.store import open_store
from pathsegdiff.store.commands.compact import compact_store
from pathsegdiff.store.encodings import Calibration, PCABasis
from pathsegdiff.train_head import coefficients as coef
from pathsegdiff.train_head.checkpoint import build_head, load_head
from pathsegdiff.train_head.evaluate import evaluate_head, evaluate_run
from pathsegdiff.train_head.heads import HeadConfig, HeadInputs
from pathsegdiff.train_head.heads.protocol import predict_classes
from pathsegdiff.train_head.read_path import read_path


@pytest.fixture(scope="module", params=["pca4-int8", "pca4"])
def pca_store(request, learnable_store, tmp_path_factory):
    """The learnable store compacted: up1 keeps 4 of its 8 channels, up2 4 of 6 (int8 or float16 coefficients)."""
    dst = tmp_path_factory.mktemp("pca") / f"{request.param}.zarr"
    compact_store(learnable_store, dst, request.param, Calibration(tiles=8))
    return str(dst)


def feature_head(kind: str, fs) -> nn.Module:
    """A head over the store's features with every weight, bias and statistic away from its default."""
    config = HeadConfig(kind, tuple(fs.schema.features.blocks), tuple(fs.timesteps), 3, fs.schema.tile_size,
                        proj_channels=8, hidden_channels=8, conv_layers=1, rgb_channels=4, rgb_layers=1,
                        ensemble=3, mlp_hidden=(16, 8))
    torch.manual_seed(0)
    head = build_head(config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, v in [*head.named_parameters(), *head.named_buffers()]:
            if not name.endswith("num_batches_tracked"):
                positive = "var" in name
                v.copy_(torch.rand(v.shape, generator=gen) + 0.5 if positive else torch.randn(v.shape, generator=gen))
    return head.eval()


def inputs(fs, tiles, read) -> HeadInputs:
    feats = {t: {b: torch.from_numpy(np.stack([read(i, t, b) for i in tiles])).float() for b in fs.blocks}
             for t in fs.timesteps}
    rgb = torch.from_numpy(np.stack([fs.read_rgb(i) for i in tiles])).float() / 255
    return HeadInputs(feats, (fs.schema.tile_size,) * 2, rgb)


@pytest.mark.parametrize("kind", ["fcn", "rgb-fcn", "linear", "mlp"])
def test_the_head_composed_onto_coefficients_gives_the_decoded_features_logits(pca_store, kind):
    fs = open_store(pca_store)
    head = feature_head(kind, fs)
    composed = coef.coefficient_head(head, fs.encoding.bases)
    assert composed.config.blocks[0].channels == 4 and composed.config.blocks[1].channels == 4
    tiles = [0, 5, 17, 30, 39]
    decoded, coefs = inputs(fs, tiles, fs.read_features), inputs(fs, tiles, fs.read_coefficients)
    with torch.no_grad():
        want, got = head(decoded), composed(coefs)
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
    assert float((got.softmax(1) - want.softmax(1)).abs().max()) <= 1e-4
    assert torch.equal(predict_classes(composed, coefs, 3), predict_classes(head, decoded, 3))
    # sensitive to the composition: the components in another order move the logits far
    wrong = {k: PCABasis(b.mean, np.roll(b.components, 1, axis=0), b.explained) for k, b in fs.encoding.bases.items()}
    with torch.no_grad():
        moved = coef.coefficient_head(head, wrong)(coefs)
    assert float((moved - want).abs().max()) > 1e-2 * float(want.abs().max())


def test_read_tile_gives_coefficients_of_a_pca_store_only(pca_store, learnable_store):
    fs = open_store(pca_store)
    tile = fs.read_tile(3, coefficients=True, extras=False)
    assert np.array_equal(tile.features[50]["up2"], fs.read_coefficients(3, 50, "up2"))
    assert tile.features[50]["up2"].shape == (4, 16, 16)
    with pytest.raises(SchemaError, match="holds no PCA coefficients"):
        open_store(learnable_store).read_tile(3, coefficients=True)


def test_evaluate_composes_by_default_with_the_decoding_metrics(pca_store, tmp_path):
    run = store_head(tmp_path / "run", pca_store)
    lines: list[str] = []
    composed = evaluate_run(run, pca_store, out_dir=tmp_path / "c", plots=False, progress=False, echo=lines.append)
    decoded = evaluate_run(run, pca_store, out_dir=tmp_path / "d", plots=False, progress=False, compose=False)
    assert not lines
    on_disk = json.loads((tmp_path / "c" / "results.json").read_text())
    assert on_disk["feature_path"] == "composed" and "composed onto the" in on_disk["feature_path_reason"]
    assert json.loads((tmp_path / "d" / "results.json").read_text())["feature_path"] == "decoded"
    assert composed["confusion_matrix"] == decoded["confusion_matrix"] and composed["miou"] == decoded["miou"]


def test_a_float16_store_decodes_without_a_word(learnable_store, tmp_path):
    run = store_head(tmp_path / "run", learnable_store)
    lines: list[str] = []
    r = evaluate_run(run, learnable_store, out_dir=tmp_path / "e", plots=False, progress=False, echo=lines.append)
    assert r["feature_path"] == "decoded" and "float16 store" in r["feature_path_reason"] and not lines


class PlugIn(nn.Module):
    """A head whose first operation is not known to compose (as any plug-in's)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(8 * 2, 3, 1)

    def forward(self, inputs: HeadInputs) -> torch.Tensor:
        x = torch.cat([inputs.features[t]["up1"] for t in (50, 150)], 1)
        return nn.functional.interpolate(self.conv(x.tanh()), size=inputs.size, mode="bilinear")


def test_a_plug_in_head_decodes_and_says_so_once(pca_store, tmp_path):
    run = store_head(tmp_path / "run", pca_store)
    _, meta = load_head(run)
    lines: list[str] = []
    ev = evaluate_head(PlugIn(meta.head.out_size), meta, pca_store, np.arange(32, 40), echo=lines.append)
    assert ev.metrics["feature_path"] == "decoded" and ev.metrics["n_tiles"] == 8
    assert len(lines) == 1 and "PlugIn head decodes every tile" in lines[0] and "fcn, linear, mlp" in lines[0]
    assert lines[0] == ev.metrics["feature_path_reason"]


def test_a_head_that_does_not_compose_is_refused_by_coefficient_head(pca_store):
    fs = open_store(pca_store)
    with pytest.raises(ConfigError, match="does not compose onto PCA coefficients"):
        coef.coefficient_head(PlugIn(32), fs.encoding.bases)
    assert read_path(PlugIn(32), fs, echo=lambda line: None).coefficients is False
