"""Training: learnable vs shuffled signal, determinism, runs, checkpoints, no diffusers needed.

Chance level on the 3-class synthetic stores: a prediction independent of the
features scores at best about 0.2 mIoU (a random map with the true class
frequencies: p / (2 - p) = 0.2 per class) and 0.11 when it predicts the
majority class everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pathsegdiff.errors import ConfigError
from pathsegdiff.store import open_store
from pathsegdiff.train_head import load_head
from pathsegdiff.train_head.fit import TrainConfig, to_device
from pathsegdiff.train_head.run import train

CHANCE_CEILING = 0.3  # above every label-independent predictor (<= 0.2), well below a learned head


def fit(store, out, **kw):
    kw.setdefault("epochs", 15)
    return train(store, out, TrainConfig(**kw), progress=False, plots=False)


@pytest.fixture(scope="module")
def fcn_run(learnable_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fcn"
    return out, train(learnable_store, out, TrainConfig(epochs=15), progress=False, plots=True)


@pytest.fixture(scope="module")
def linear_result(learnable_store, tmp_path_factory):
    return fit(learnable_store, tmp_path_factory.mktemp("runs") / "linear", head="linear")


def test_fcn_learns_and_linear_is_lower_but_above_chance(fcn_run, linear_result):
    fcn = fcn_run[1]
    assert fcn["split"] == "test" and fcn["n_tiles"] == 8
    assert fcn["miou"] > 0.8
    assert CHANCE_CEILING + 0.1 < linear_result["miou"] < fcn["miou"] - 0.1


@pytest.mark.parametrize("head", ["fcn", "linear"])
def test_shuffled_labels_stay_at_chance(shuffled_store, tmp_path, head):
    r = fit(shuffled_store, tmp_path / head, head=head)
    assert r["miou"] < CHANCE_CEILING


def test_mlp_ensemble_learns(learnable_store, tmp_path):
    r = fit(learnable_store, tmp_path / "mlp", head="mlp", epochs=4,
            head_options={"ensemble": 2, "mlp_hidden": [32, 16], "pixels_per_tile": 256})
    assert r["miou"] > 0.6
    _, meta = load_head(tmp_path / "mlp")
    assert meta.head.ensemble == 2 and meta.head.mlp_hidden == (32, 16)


def test_results_json_summary_and_plots(fcn_run, learnable_store):
    out, r = fcn_run
    on_disk = json.loads((out / "results.json").read_text())
    for key in ("pixel_accuracy", "miou", "mdice", "per_class", "confusion_matrix", "n_tiles", "store_identity"):
        assert key in on_disk
    assert on_disk["store_identity"] == open_store(learnable_store).identity
    assert set(on_disk["per_class"]) == {"tumor", "stroma", "other"}
    assert np.asarray(on_disk["confusion_matrix"]).sum() == 8 * 32 * 32
    assert on_disk["per_slide"]["spread"]["miou"]["n"] == 5
    summary = (out / "summary.md").read_text()
    assert "| miou |" in summary and "| tumor |" in summary
    for name in ("learning_curves.png", "confusion_matrix.png", "overlays.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))


def test_load_head_applies_to_store_features(fcn_run, learnable_store):
    out, r = fcn_run
    head, meta = load_head(out)
    assert not head.training and meta.blocks == ("up1", "up2") and meta.timesteps == (50, 150)
    assert meta.class_names == ("tumor", "stroma", "other") and meta.ignore_index == 255
    store = open_store(learnable_store)
    idx = list(range(32, 40))  # the test split
    feats = {t: {b: torch.from_numpy(store.read_features(slice(32, 40), t, b)) for b in meta.blocks}
             for t in meta.timesteps}
    with torch.no_grad():
        logits = head(to_device(feats, torch.device("cpu")))
    assert logits.shape == (8, 3, 32, 32)
    acc = (logits.argmax(1).numpy() == store.read_labels(slice(32, 40))).mean()
    assert acc == pytest.approx(r["pixel_accuracy"], abs=1e-9)
    assert len(idx) == r["n_tiles"]


def test_same_seed_same_run(learnable_store, tmp_path):
    a = fit(learnable_store, tmp_path / "a", head="linear", epochs=3)
    b = fit(learnable_store, tmp_path / "b", head="linear", epochs=3)
    assert a["per_run"][0]["confusion_matrix"] == b["per_run"][0]["confusion_matrix"]
    wa = (tmp_path / "a" / "runs" / "seed_0" / "head.safetensors").read_bytes()
    wb = (tmp_path / "b" / "runs" / "seed_0" / "head.safetensors").read_bytes()
    assert wa == wb
    fit(learnable_store, tmp_path / "c", head="linear", epochs=3, seed=1)
    wc = (tmp_path / "c" / "runs" / "seed_1" / "head.safetensors").read_bytes()
    assert wc != wa


def test_runs_report_mean_and_std(learnable_store, tmp_path):
    r = fit(learnable_store, tmp_path / "r", head="linear", epochs=2, runs=2, seed=3)
    assert r["runs"] == 2 and r["seeds"] == [3, 4] and len(r["per_run"]) == 2
    mious = [p["miou"] for p in r["per_run"]]
    assert r["miou"] == pytest.approx(np.mean(mious))
    assert r["std"]["miou"] == pytest.approx(np.std(mious, ddof=1))
    assert r["per_class"]["tumor"]["iou_std"] is not None
    assert (tmp_path / "r" / r["best_run"] / "head.json").is_file()
    _, meta = load_head(tmp_path / "r")
    assert f"seed_{meta.seed}" in r["best_run"]


def test_label_fraction_and_selection_are_recorded(learnable_store, tmp_path):
    r = fit(learnable_store, tmp_path / "f", head="linear", epochs=1, label_fraction=5, blocks=("up2",),
            timesteps=(150,))
    assert r["n_train_tiles"] == 5 and r["blocks"] == ["up2"] and r["timesteps"] == [150]
    _, meta = load_head(tmp_path / "f")
    assert meta.blocks == ("up2",) and meta.train["label_fraction"] == 5


def test_early_stopping_keeps_the_best_epoch(shuffled_store, tmp_path):
    r = fit(shuffled_store, tmp_path / "e", head="linear", epochs=30, patience=1)
    run = r["per_run"][0]
    assert run["epochs_run"] < 30
    history = json.loads((tmp_path / "e" / "runs" / "seed_0" / "history.json").read_text())
    best = max(history, key=lambda h: h["val_miou"])
    assert run["best_epoch"] == best["epoch"] and run["val_miou"] == pytest.approx(best["val_miou"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_requested_without_a_device(learnable_store, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA device"):
        fit(learnable_store, tmp_path / "c", device="cuda")


def test_trains_with_diffusers_and_extract_unimportable(learnable_store, tmp_path):
    script = textwrap.dedent(f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "diffusers" or name.startswith(("diffusers.", "pathsegdiff.extract")):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        sys.modules["diffusers"] = None
        from pathsegdiff.train_head.fit import TrainConfig
        from pathsegdiff.train_head.run import train
        from pathsegdiff.train_head.evaluate import evaluate_run
        r = train({str(learnable_store)!r}, {str(tmp_path / 'run')!r}, TrainConfig(head="linear", epochs=1),
                  progress=False)
        evaluate_run({str(tmp_path / 'run')!r}, {str(learnable_store)!r})
        loaded = [m for m in sys.modules if m.startswith(("pathsegdiff.extract", "diffusers")) and sys.modules[m]]
        assert not loaded, loaded
        print("miou", r["miou"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "miou" in out.stdout


def test_object_metrics_reported_when_the_store_has_instances(tmp_path):
    from helpers.synthetic_store import build_store

    where = build_store(tmp_path / "glas", n_tiles=16, splits=(8, 4, 4), instances=True)
    r = fit(where, tmp_path / "run", head="linear", epochs=2)
    objects = r["objects"]
    assert set(objects) == {"object_f1", "object_dice", "object_hausdorff"}
    assert 0 <= objects["object_f1"] <= 1 and objects["object_hausdorff"] >= 0
    assert r["per_run"][0]["objects"]["n_images"] == 4
    assert "object_f1" in (tmp_path / "run" / "summary.md").read_text()
