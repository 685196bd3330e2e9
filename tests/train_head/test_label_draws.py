"""--label-draws: one label subset for every run (fixed, the default), or one per run (per-run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError
from pathsegdiff.store import open_store
from pathsegdiff.train_head.data import pixel_counts
from pathsegdiff.train_head.fit import TrainConfig
from pathsegdiff.train_head.losses import auto_class_weights
from pathsegdiff.train_head.splits import read_splits, train_tiles
from pathsegdiff.train_head.store_set import open_stores

runner = CliRunner()
ARGS = ["--head", "linear", "--epochs", "1", "--runs", "3", "--label-fraction", "6", "--class-weights", "auto", "--quiet"]


@pytest.mark.parametrize("draws", ["fixed", "per-run"])
def test_each_run_trains_on_the_subset_its_draw_names(learnable_store, tmp_path, draws):
    out = tmp_path / draws
    r = runner.invoke(app, ["train", str(learnable_store), "-o", str(out), *ARGS, "--label-draws", draws])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert json.loads((out / "run.json").read_text())["config"]["label_draws"] == draws
    seeds = [run["label_draw_seed"] for run in results["per_run"]]
    assert seeds == ([0, 0, 0] if draws == "fixed" else [0, 1, 2])
    assert [run["n_train_tiles"] for run in results["per_run"]] == [6, 6, 6]
    splits = read_splits(open_stores([str(learnable_store)]), 0, 0.2)
    subsets = {tuple(train_tiles(splits, 6, s)) for s in seeds}
    assert len(subsets) == (1 if draws == "fixed" else 3)  # three seeds, three different subsets of 6 tiles
    assert all(set(s) <= set(splits.train) for s in subsets)
    # the loss of each run was weighted by its own subset's pixels: one weight list per draw
    used = json.loads((out / "run.json").read_text())["class_weights_used"]
    sch = open_store(learnable_store).schema
    expected = [auto_class_weights(pixel_counts([str(learnable_store)], train_tiles(splits, 6, s), len(sch.class_names),
                                                sch.ignore_index)) for s in sorted(set(seeds))]
    np.testing.assert_allclose(np.asarray(used if draws == "per-run" else [used]), np.asarray(expected), rtol=1e-9)


def test_an_unknown_choice_is_refused():
    with pytest.raises(ConfigError, match="--label-draws 'each'"):
        TrainConfig(label_draws="each")
    assert TrainConfig().to_dict()["label_draws"] == "fixed"
