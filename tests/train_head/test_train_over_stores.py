"""``train`` and ``evaluate`` over several stores: one training set, per-slide and per-patient metrics, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers.synthetic_store import BLOCKS, CLASSES, TILE, TIMESTEPS, blob_labels, encode
from pathsegdiff.cli import app
from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store, open_store
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.evaluate import evaluate_run
from pathsegdiff.train_head.store_set import open_stores

runner = CliRunner()


def cohort_store(path, site: str, patients: list[str], splits: list[str], seed: int, blocks=BLOCKS,
                 timesteps=TIMESTEPS, classes=CLASSES) -> str:
    """A learnable store (synthetic_store's encoding) of 4 tiles per slide, 2 slides per patient."""
    rng = np.random.default_rng(seed)
    records = [TileRecord(f"{site}{p}s{s}_{t}", f"{site}{p}s{s}", 32 * t, 0, 0.5, split, p)
               for p, split in zip(patients, splits) for s in range(2) for t in range(4)]
    n = len(records)
    spec = FeatureSpec("synthetic", "0" * 64, tuple(blocks), tuple(timesteps), tile_size=TILE)
    lab = blob_labels(rng, n, len(CLASSES), TILE)
    mix = np.random.default_rng(1234)
    feats = {t: {b.name: encode(lab, len(CLASSES), b, mix.normal(size=(b.channels, len(CLASSES))), 0.6, rng)
                 for b in blocks} for t in timesteps}
    with create_store(path, StoreSchema(spec, n_tiles=n, class_names=classes), records) as w:
        w.write(range(n), TileBatch(feats, labels=lab, rgb=np.zeros((n, 3, TILE, TILE), np.uint8)))
    return str(path)


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    a = cohort_store(root / "a.zarr", "A", ["P1", "P2", "P3", "P4"], ["", "", "", "test"], seed=0)
    b = cohort_store(root / "b.zarr", "B", ["P5", "P6", "P1"], ["", "", ""], seed=1)  # P1 is in both stores
    return a, b


def test_a_store_set_numbers_tiles_across_stores_and_splits_by_patient(two_sites):
    s = open_stores(two_sites)
    assert s.n_tiles == 32 + 24 and s.locate(33) == (1, 1) and len(s.written()) == 56
    t = s.full_table()
    assert list(t["store"][30:34]) == [0, 0, 1, 1] and t["patient"][55] == "P1"
    from pathsegdiff.train_head.splits import read_splits

    sp = read_splits(s, seed=0, val_fraction=0.3)
    patients = np.asarray(t["patient"]).astype(str)
    for one, other in ((sp.train, sp.val), (sp.train, sp.test), (sp.val, sp.test)):
        assert not set(patients[one]) & set(patients[other])  # P1's tiles in both stores stay together
    assert set(patients[sp.test]) == {"P4"}


@pytest.fixture(scope="module")
def trained(two_sites, tmp_path_factory):
    run = tmp_path_factory.mktemp("over") / "run"
    r = runner.invoke(app, ["train", *two_sites, "-o", str(run), "--head", "linear", "--epochs", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    return run


def test_train_over_two_stores_reports_per_slide_and_per_patient(two_sites, trained, tmp_path):
    run = trained
    res = json.loads((run / "results.json").read_text())
    assert res["stores"] == list(two_sites) and res["split"] == "test" and res["n_tiles"] == 8
    assert res["n_train_tiles"] + res["n_val_tiles"] + res["n_tiles"] == 56
    # the evaluated tiles are the test split: patient P4's two slides in store a
    assert set(res["per_slide"]["slides"]) == {"AP4s0", "AP4s1"}
    assert list(res["per_patient"]["patients"]) == ["P4"]
    assert json.loads((run / "run.json").read_text())["stores"] == list(two_sites)
    assert json.loads((run / "runs" / "seed_0" / "head.json").read_text())["stores"] == list(two_sites)
    r = runner.invoke(app, ["evaluate", str(run), "--split", "val", "--quiet"])  # the run's own stores, both
    assert r.exit_code == 0, r.output
    assert "the stores the run was trained on" in r.output
    ev = json.loads(next((run / "eval").glob("*/results.json")).read_text())
    assert ev["stores"] == list(two_sites)
    pats = ev["per_patient"]["patients"]
    assert len(pats) >= 1 and ev["per_patient"]["spread"]["miou"]["n"] == len(pats)
    r = runner.invoke(app, ["evaluate", str(run), "--store", two_sites[0], "--store", two_sites[1], "--split", "train",
                            "-o", str(tmp_path / "ev"), "--quiet"])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert len(ev["per_patient"]["patients"]) >= 2
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "## Per slide" in summary and "## Per patient" in summary and " + " in summary.splitlines()[0]


def independent_miou(pred: np.ndarray, labels: np.ndarray, n_classes: int, ignore: int = 255) -> float:
    """mIoU over the classes present in labels or predictions, counted pixel by pixel."""
    keep = labels != ignore
    p, t = pred[keep], labels[keep]
    ious = [((p == c) & (t == c)).sum() / ((p == c) | (t == c)).sum() for c in range(n_classes)
            if ((p == c) | (t == c)).any()]
    return float(np.mean(ious))


def test_per_slide_and_per_patient_numbers_match_an_independent_count(two_sites, trained):
    """Each slide's and each patient's mIoU, recomputed from the stores' labels and the head's own predictions
    (read tile by tile, outside the evaluation code); P1 has slides in both stores and is one patient."""
    head, meta = load_head(trained)
    pred, lab, slide, patient = [], [], [], []
    for where in two_sites:
        fs, table = open_store(where), open_stores(where).full_table()
        for i in range(fs.n_tiles):
            feats = {ts: {b: torch.from_numpy(fs.read_features(i, ts, b)[None]).float() for b in meta.blocks}
                     for ts in meta.timesteps}
            with torch.no_grad():
                pred.append(head.predict(feats)[0].numpy())
            lab.append(fs.read_labels(i))
            slide.append(str(table["slide_id"][i]))
            patient.append(str(table["patient"][i]))
    pred, lab, slide, patient = map(np.asarray, (pred, lab, slide, patient))
    assert len(np.unique(pred)) > 1  # a head that predicts one class everywhere would make this test weak
    found = {}
    for split in ("train", "val"):
        res = evaluate_run(trained, None, split=split, plots=False, progress=False)
        found.update({p: (split, v) for p, v in res["per_patient"]["patients"].items()})
        for s, v in res["per_slide"]["slides"].items():
            assert v["miou"] == pytest.approx(independent_miou(pred[slide == s], lab[slide == s], len(CLASSES))), s
        for p, v in res["per_patient"]["patients"].items():
            assert v["miou"] == pytest.approx(independent_miou(pred[patient == p], lab[patient == p], len(CLASSES)))
            assert v["n_pixels"] == int((lab[patient == p] != 255).sum())
        vals = [v["miou"] for v in res["per_patient"]["patients"].values()]
        sp = res["per_patient"]["spread"]["miou"]
        assert sp["n"] == len(vals) and sp["mean"] == pytest.approx(np.mean(vals))
        if len(vals) > 1:
            assert sp["std"] == pytest.approx(np.std(vals, ddof=1))
    # the five patients outside the test split, P1 once, with its four slides from both stores
    assert sorted(found) == ["P1", "P2", "P3", "P5", "P6"]
    assert found["P1"][1]["slides"] == ["AP1s0", "AP1s1", "BP1s0", "BP1s1"]


def test_evaluate_quiet_prints_only_its_lines(trained, two_sites, tmp_path):
    # reports outside the run: a run directory holding files train did not write is never replaced
    loud = runner.invoke(app, ["evaluate", str(trained), "--split", "val", "-o", str(tmp_path / "loud")])
    quiet = runner.invoke(app, ["evaluate", str(trained), "--split", "val", "-o", str(tmp_path / "quiet"), "--quiet"])
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert "evaluate: val split" in loud.output  # the progress bar
    lines = quiet.output.strip().splitlines()
    assert len(lines) == 2 and "\r" not in quiet.output, quiet.output
    assert lines[0].startswith("evaluating on ") and "val split" in lines[1]


def test_a_run_that_recorded_one_store_still_evaluates(learnable_store, tmp_path):
    """Runs written before training took several stores name ``store`` (run.json) and ``store_location``
    (head.json); evaluate reads them as a one-store list and scores as before."""
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", learnable_store, "-o", str(run), "--head", "linear", "--epochs", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    before = json.loads((run / "results.json").read_text())
    for name, key in (("run.json", "store"), ("runs/seed_0/head.json", "store_location")):
        doc = json.loads((run / name).read_text())
        doc[key] = doc.pop("stores")[0]
        (run / name).write_text(json.dumps(doc))
    r = runner.invoke(app, ["evaluate", str(run), "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"evaluating on {learnable_store}, the store the run was trained on" in r.output
    after = json.loads(next((run / "eval").glob("*-test/results.json")).read_text())
    assert after["stores"] == [learnable_store] and after["miou"] == pytest.approx(before["miou"])
    assert after["confusion_matrix"] == before["confusion_matrix"]
    (run / "runs/seed_0/head.json").write_text(json.dumps({**json.loads((run / "runs/seed_0/head.json").read_text()),
                                                           "store_location": ""}))
    r = runner.invoke(app, ["evaluate", str(run), "--quiet", "-o", str(tmp_path / "ev2")])  # run.json still says
    assert r.exit_code == 0 and learnable_store in r.output, r.output


@pytest.mark.parametrize("other, field", [
    (dict(blocks=(BLOCKS[0],)), "blocks"),
    (dict(timesteps=(50,)), "timesteps"),
    (dict(blocks=(BLOCKS[0], BlockSpec("up2", 6, 8, 8))), "blocks"),
    (dict(classes=("tumor", "stroma", "fat")), "class_names"),
])
def test_mismatched_stores_are_refused_in_one_line(two_sites, tmp_path, other, field):
    c = cohort_store(tmp_path / "c.zarr", "C", ["P7"], [""], seed=2, **other)
    r = runner.invoke(app, ["train", two_sites[0], c, "-o", str(tmp_path / "run"), "--quiet"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert f"c.zarr: its {field} differ from " in lines[0] and "a.zarr" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_mismatched_stores_in_one_line(trained, two_sites, tmp_path):
    c = cohort_store(tmp_path / "c.zarr", "C", ["P7"], [""], seed=2, timesteps=(50,))
    r = runner.invoke(app, ["evaluate", str(trained), "--store", two_sites[0], "--store", c, "-o", str(tmp_path / "ev")])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and "c.zarr: its timesteps differ from " in lines[0], r.output
    assert not (tmp_path / "ev").exists()


def test_the_same_run_over_other_stores_is_another_run(trained, two_sites):
    before = (trained / "results.json").read_text()
    r = runner.invoke(app, ["train", two_sites[0], "-o", str(trained), "--head", "linear", "--epochs", "2", "--quiet"])
    assert r.exit_code == 1 and "holds a different run" in r.output and "--overwrite" in r.output, r.output
    assert (trained / "results.json").read_text() == before
