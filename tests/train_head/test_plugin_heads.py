"""Plug-in heads: a head in a file outside the package trained, evaluated and predicted through the CLI; its
code is rebuilt only from a file of the recorded SHA-256; a head that breaks the protocol is refused in one line
before anything is written; a run written before plug-ins still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.synthetic_store import build_store
from pathsegdiff.cli import app
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.fit import TrainConfig

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()

PLUGIN = '''
import torch
import torch.nn.functional as F
from torch import nn


class TinyHead(nn.Module):
    """Per-block 1x1 convs to ``width``, upsampled to the labels and summed, then a 1x1 classifier."""

    def __init__(self, spec, width=8):
        super().__init__()
        self.spec = spec
        self.project = nn.ModuleDict({name: nn.Conv2d(c, width, 1) for name, c in spec.in_channels.items()})
        self.classify = nn.Conv2d(width, spec.n_classes, 1)

    def forward(self, inputs):
        x = 0
        for b in self.spec.blocks:
            stacked = torch.cat([inputs.features[t][b.name] for t in self.spec.timesteps], 1)
            x = x + F.interpolate(self.project[b.name](stacked), size=inputs.size, mode="bilinear",
                                  align_corners=False)
        return self.classify(torch.relu(x))


class WrongShape(TinyHead):
    def forward(self, inputs):
        return super().forward(inputs)[..., ::2, ::2]


class ReturnsTuple(TinyHead):
    def forward(self, inputs):
        out = super().forward(inputs)
        return out, out


class NotAModule:
    def __init__(self, spec):
        self.spec = spec
'''




def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The error: one line, the last (evaluate first says which stores it evaluates on)."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.output
    return lines[-1]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("user_code") / "my_heads.py"  # outside the package and the run
    path.write_text(PLUGIN)
    return path


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """24 tiles of 64 px from the bundled H&E crops, tiny model: a store predict can recompute."""
    store = tmp_path_factory.mktemp("tiny") / "he.zarr"
    r = invoke("extract", DATA / "he_tiles", "-o", store, "--tile-size", "64", "--stride", "64", "--threads", "1",
               "--quiet")  # one thread: two spin-waiting ones on two busy cores took 15 times longer
    assert r.exit_code == 0, r.output
    return store


def test_a_custom_head_trains_evaluates_and_predicts_through_the_cli(plugin, tiny_store, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", tiny_store, "-o", run, "--head", f"{plugin}:TinyHead", "--head-args", '{"width": 4}',
               "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"{plugin}:TinyHead head, val split" in r.output.strip().splitlines()[-1]
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["config"]["head"] == f"{plugin}:TinyHead" and recorded["config"]["head_options"] == {"width": 4}
    import hashlib

    sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert recorded["head_code"] == {"class_path": f"{plugin}:TinyHead", "file": str(plugin), "sha256": sha}
    head, meta = load_head(run)
    assert type(head).__name__ == "TinyHead" and meta.code.sha256 == sha and meta.head.args == {"width": 4}
    assert head.project["up1"].out_channels == 4
    assert not list(run.rglob("*.py")) and not list(run.rglob("*.pt"))  # no code, no pickle in the run

    r = invoke("evaluate", run, "--split", "val", "--quiet")
    assert r.exit_code == 0, r.output
    assert "TinyHead head, val split" in r.output and "boundary F1 (2 px)" in r.output

    image = DATA / "he_tiles" / "images" / "histo_x50_y50.png"
    r = invoke("predict", image, "--head", run, "-o", tmp_path / "pred", "--model", "tiny")
    assert r.exit_code == 0, r.output
    assert "regions in" in r.output and (tmp_path / "pred" / "mask.png").is_file()


def test_rgb_fcn_predicts_a_slide_image_with_its_pixels(tiny_store, tmp_path):
    run = tmp_path / "rgb"
    r = invoke("train", tiny_store, "-o", run, "--head", "rgb-fcn", "--head-args",
               '{"proj_channels": 4, "hidden_channels": 8, "conv_layers": 1, "rgb_channels": 4, "rgb_layers": 1}',
               "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.output
    image = DATA / "he_tiles" / "images" / "target_image_x0_y0.png"
    r = invoke("predict", image, "--head", run, "-o", tmp_path / "pred", "--model", "tiny")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "pred" / "prediction.json").read_text())["tiles"] > 0


@pytest.fixture(scope="module")
def plugin_run(learnable_store, tmp_path_factory):
    """A TinyHead trained for one epoch on the synthetic store; its code in a file of its own."""
    root = tmp_path_factory.mktemp("hash")
    code = root / "heads.py"
    code.write_text(PLUGIN)
    run = root / "run"
    r = invoke("train", learnable_store, "-o", run, "--head", f"{code}:TinyHead", "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.output
    return run, code


def test_changed_code_is_refused_and_head_code_of_the_recorded_hash_is_taken(plugin_run, tmp_path):
    run, code = plugin_run
    original = code.read_text()
    copy = tmp_path / "copy_of_heads.py"
    copy.write_text(original)
    try:
        code.write_text(original + "\n# edited after training\n")
        line = one_error_line(invoke("evaluate", run, "--split", "val", "--quiet"))
        assert "has changed since training" in line and "--head-code" in line, line
        line = one_error_line(invoke("evaluate", run, "--split", "val", "--head-code", code, "--quiet"))
        assert "differs from" in line and "refusing other code" in line, line
        r = invoke("evaluate", run, "--split", "val", "--head-code", copy, "--quiet")
        assert r.exit_code == 0, r.output
        code.unlink()
        line = one_error_line(invoke("evaluate", run, "--split", "val", "--quiet"))
        assert "is gone" in line and "--head-code" in line, line
    finally:
        code.write_text(original)
    assert invoke("evaluate", run, "--split", "val", "--quiet").exit_code == 0


def test_code_is_never_imported_from_the_run_directory(plugin_run, tmp_path):
    run, code = plugin_run
    crafted = tmp_path / "run"
    shutil.copytree(run, crafted)
    shutil.copy(code, crafted / "heads.py")  # the same bytes, so the same hash, but shipped inside the run
    meta_path = crafted / "runs" / "seed_0" / "head.json"
    meta = json.loads(meta_path.read_text())
    meta["code"]["file"] = str(crafted / "heads.py")
    meta["code"]["class_path"] = meta["head"]["kind"] = f"{crafted / 'heads.py'}:TinyHead"
    meta_path.write_text(json.dumps(meta))
    line = one_error_line(invoke("evaluate", crafted, "--split", "val", "--quiet"))
    assert "never imported from a run's contents" in line, line


@pytest.mark.parametrize("cls, said", [
    ("WrongShape", "head WrongShape returned a float32 Tensor of shape (2, 3, 16, 16); the protocol wants float "
                   "logits of shape (2, 3, 32, 32)"),
    ("ReturnsTuple", "head ReturnsTuple returned a tuple of 2 items, not a Tensor of logits (2, 3, 32, 32)"),
    ("NotAModule", "NotAModule(spec, **{}) built a NotAModule, not a torch.nn.Module"),
    ("Missing", "has no Missing (its nn.Module classes: ReturnsTuple, TinyHead, WrongShape)"),
])
def test_a_head_that_breaks_the_protocol_is_refused_before_training(learnable_store, plugin, tmp_path, cls, said):
    out = tmp_path / "run"
    line = one_error_line(invoke("train", learnable_store, "-o", out, "--head", f"{plugin}:{cls}", "--quiet"))
    assert said in line, line
    assert not out.exists()  # refused before anything was written


def test_bad_head_code_and_arguments_are_one_line(learnable_store, plugin, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("class Head(:\n")
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head", f"{broken}:Head"))
    assert "importing the head code failed: SyntaxError" in line, line
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head", f"{plugin}:TinyHead",
                                 "--head-args", '{"depth": 3}'))
    assert "TinyHead(spec, **{'depth': 3}) failed: TypeError" in line, line
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head-args", '{"depth": 3}'))
    assert "unknown head options ['depth'] for the fcn head" in line, line
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head-args", "[1]"))
    assert "a JSON object of keyword arguments is needed" in line, line
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head", "unet"))
    assert "unknown head 'unet'" in line and "rgb-fcn" in line and "path/to/heads.py:Class" in line, line
    line = one_error_line(invoke("train", learnable_store, "-o", tmp_path / "r", "--head", "no/such.py:Head"))
    assert "no such file" in line, line


def test_built_in_heads_take_head_args_from_a_json_file_and_the_run_records_the_loss(learnable_store, tmp_path):
    args = tmp_path / "fcn.json"
    args.write_text(json.dumps({"proj_channels": 4, "hidden_channels": 8, "conv_layers": 1}))
    r = invoke("train", learnable_store, "-o", tmp_path / "run", "--head-args", args, "--epochs", "1", "--loss",
               "focal", "--class-weights", "auto", "--augment", "none", "--quiet")
    assert r.exit_code == 0, r.output
    _, meta = load_head(tmp_path / "run")
    assert (meta.head.proj_channels, meta.head.hidden_channels, meta.head.conv_layers) == (4, 8, 1)
    assert meta.code is None and meta.head.kind == "fcn"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {k: run["config"][k] for k in ("loss", "focal_gamma", "class_weights", "augment")} == \
        {"loss": "focal", "focal_gamma": 2.0, "class_weights": "auto", "augment": False}
    assert len(run["class_weights_used"]) == 3 and abs(sum(run["class_weights_used"]) / 3 - 1) < 1e-9
    assert "notrotation-equivariant" in "".join(invoke("train", "--help").output.split())  # help wraps lines


def test_a_run_written_before_plugins_still_loads(tmp_path):
    """tests/data/runs/fcn_v0: an fcn run written by the code before plug-ins (head.json without code, run.json
    with ``workers`` and none of the loss options), on the default synthetic store."""
    run = tmp_path / "run"
    shutil.copytree(DATA / "runs" / "fcn_v0", run)
    store = build_store(tmp_path / "store")
    head, meta = load_head(run)
    assert meta.code is None and meta.head.kind == "fcn" and meta.head.args == {}
    config = TrainConfig.from_dict(json.loads((run / "run.json").read_text())["config"])
    assert (config.loader_workers, config.loss, config.class_weights, config.augment) == (0, "ce", None, True)
    r = invoke("evaluate", run, "--store", store, "--split", "test", "--quiet")
    assert r.exit_code == 0, r.output
    assert "fcn head, test split (8 tiles)" in r.output


def test_rgb_fcn_trains_on_the_stored_rgb_and_a_store_without_rgb_is_refused(learnable_store, tmp_path):
    # the synthetic store's RGB paints each class in its own colour: a head that sees it learns at once
    r = invoke("train", learnable_store, "-o", tmp_path / "rgb", "--head", "rgb-fcn", "--head-args",
               '{"proj_channels": 4, "hidden_channels": 8, "conv_layers": 1, "rgb_channels": 8, "rgb_layers": 1}',
               "--epochs", "4", "--lr", "0.01", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rgb" / "results.json").read_text())["miou"] > 0.8
    bare = build_store(tmp_path / "bare", n_tiles=6, splits=(4, 1, 1), rgb=False)
    line = one_error_line(invoke("train", bare, "-o", tmp_path / "r", "--head", "rgb-fcn"))
    assert "needs the tiles' RGB and this store holds none" in line and not (tmp_path / "r").exists(), line
