"""`pathsegdiff demo` end to end on a small crop of the bundled slide (make demo runs the full one)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from helpers.slides import write_slide_crop
from pathsegdiff.cli import app

runner = CliRunner()


def test_demo_writes_every_output_and_says_where(tmp_path):
    slide = write_slide_crop(tmp_path / "crop.svs")
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "-o", str(out), "--slide", str(slide), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    for path in ("features.zarr/zarr.json", "run/results.json", "run/summary.md", "slide_prediction.png",
                 "prediction/mask.tif", "prediction/regions.geojson"):
        assert (out / path).is_file(), path
    for shown in ("features.zarr", "run/", "slide_prediction.png", "prediction/"):  # the final screen says where
        assert f"{out}/{shown}" in r.output, shown
    # says what he-tiny is (trained here, not a pathology model) and the way to the real model
    assert "he-tiny" in r.output and "not a pathology model" in r.output and "--model LDM_DIR" in r.output
    results = json.loads((out / "run" / "results.json").read_text())
    miou = results["miou"]["mean"] if isinstance(results["miou"], dict) else results["miou"]
    assert results["split"] == "test" and 0.0 <= miou <= 1.0
    assert runner.invoke(app, ["store", "verify", str(out / "features.zarr")]).exit_code == 0


def test_demo_refuses_a_used_directory_and_a_missing_slide(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["demo", "-o", str(tmp_path / "used")])
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    r = runner.invoke(app, ["demo", "-o", str(tmp_path / "new"), "--slide", str(tmp_path / "nope.svs")])
    assert r.exit_code == 1 and "nope.svs" in r.output
