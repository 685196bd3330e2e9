"""predict with the wrong model names the model the head was trained on (not --overwrite)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from helpers.heads import tiny_model_head
from pathsegdiff.cli import app
from pathsegdiff.predict.run import _model_option

DATA = Path(__file__).parents[1] / "data"


def test_the_model_option_of_a_recorded_model_id():
    assert _model_option("tiny-vit-v1") == "tiny-vit" and _model_option("tiny-v1") == "tiny"
    assert _model_option("he-tiny-v1") == "he-tiny"
    assert "'BRCA20x'" in _model_option("compvis:BRCA20x")


def test_a_head_of_another_model_asks_for_that_model(tmp_path):
    run = tiny_model_head(tmp_path / "head")
    meta = json.loads((run / "head.json").read_text())
    meta["store_identity_fields"]["model_id"] = "tiny-vit-v1"  # as if trained on a tiny-vit store
    (run / "head.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(app, ["predict", str(DATA / "target_image.png"), "--head", str(run),
                                 "-o", str(tmp_path / "pred")])
    assert r.exit_code == 1, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("error:"))
    assert "pass --model tiny-vit" in line and "--overwrite" not in line, line
    assert not (tmp_path / "pred").exists()
