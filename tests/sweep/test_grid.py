"""The sweep's grid: parsing its options, expanding it into cells, refusing what no cell could train on."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.cli.sweep_cmd import sweep_cmd
from pathsegdiff.errors import ConfigError
from pathsegdiff.sweep import MIN_TRAIN_TILES, SweepConfig, parse_fractions, parse_heads, parse_sets
from pathsegdiff.sweep.grid import check_fractions
from pathsegdiff.train_head.fit import TrainConfig

runner = CliRunner()


def test_sets_parse_into_tuples_and_default_to_everything():
    assert parse_sets("up1,up2,up1+up2", "--blocks") == (("up1",), ("up2",), ("up1", "up2"))
    assert parse_sets("50, 150 ,50+150", "--timesteps", int) == ((50,), (150,), (50, 150))
    assert parse_sets(None, "--blocks") == (None,) and parse_sets("", "--timesteps", int) == (None,)
    assert parse_heads("fcn,linear") == ("fcn", "linear")


@pytest.mark.parametrize("value, fragment", [("up1,up1", "repeated"), ("up1,,up2", "empty"),
                                             ("up1+up2,up2+up1", "same set"), ("up1+", "empty or repeated"),
                                             ("up1+up1", "empty or repeated")])
def test_bad_sets_are_refused(value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_sets(value, "--blocks")


def test_timesteps_must_be_numbers():
    with pytest.raises(ConfigError, match="cannot read 'fifty'"):
        parse_sets("50,fifty", "--timesteps", int)


def test_fractions_are_train_label_fractions():
    assert parse_fractions("10%,25%,100%") == (0.1, 0.25, 1.0)
    assert parse_fractions("10,25,0.5") == (10, 25, 0.5)  # counts as train --label-fraction reads them
    with pytest.raises(ConfigError, match="same fraction"):
        parse_fractions("100%,1")
    with pytest.raises(ConfigError, match="label fraction"):
        parse_fractions("10%,lots")


def test_the_grid_expands_head_major_with_one_config_per_cell():
    config = SweepConfig(heads=("fcn", "linear"), block_sets=(("up1",), ("up2",), ("up1", "up2")),
                         timestep_sets=((50,), (50, 150)), label_fractions=(0.1, 25),
                         train=TrainConfig(epochs=2, runs=3, seed=7))
    cells = config.cells()
    assert len(cells) == 2 * 3 * 2 * 2
    assert [c.head for c in cells[:12]] == ["fcn"] * 12 and [c.fraction for c in cells[:2]] == [0.1, 25]
    assert cells[0].name == "fcn__up1__t50__10pct" and cells[-1].name == "linear__up1+up2__t50+150__25tiles"
    assert len({c.name for c in cells}) == len(cells)
    last = config.cell_config(cells[-1])
    assert (last.head, last.blocks, last.timesteps, last.label_fraction) == ("linear", ("up1", "up2"), (50, 150), 25)
    assert (last.epochs, last.runs, last.seed) == (2, 3, 7)  # the shared options pass through


def test_the_recorded_options_leave_out_what_varies_per_cell():
    d = SweepConfig(heads=("fcn",), train=TrainConfig(runs=2, head="linear", label_fraction=0.5)).to_dict()
    assert d["heads"] == ["fcn"] and d["block_sets"] == [None] and d["label_fractions"] == [1.0]
    assert d["train"]["runs"] == 2 and not {"head", "blocks", "timesteps", "label_fraction"} & set(d["train"])


def test_unknown_heads_and_options_are_refused_before_training():
    with pytest.raises(ConfigError, match="unknown head 'unet'"):
        SweepConfig(heads=("fcn", "unet"))
    with pytest.raises(ConfigError, match="unknown head options"):
        SweepConfig(heads=("fcn",), train=TrainConfig(head_options={"width": 3}))
    with pytest.raises(ConfigError, match="coefficients"):
        SweepConfig(train=TrainConfig(coefficients=True))


def test_a_fraction_leaving_fewer_than_min_train_tiles_is_refused():
    check_fractions((MIN_TRAIN_TILES / 24, 1.0), 24, "store")  # exactly the minimum passes
    with pytest.raises(ConfigError, match=f"leaves {MIN_TRAIN_TILES - 1}, fewer than the {MIN_TRAIN_TILES}"):
        check_fractions(((MIN_TRAIN_TILES - 1) / 24,), 24, "store")
    with pytest.raises(ConfigError, match="MIN_TRAIN_TILES"):
        check_fractions((2,), 24, "store")  # a tile count too
    with pytest.raises(ConfigError, match="asks for 30 tiles but the train split has only 24"):
        check_fractions((30,), 24, "store")


def test_the_cli_refuses_a_too_small_fraction_in_one_line_before_writing(sweep_store, tmp_path):
    out = tmp_path / "sweep"
    r = runner.invoke(app, ["sweep", sweep_store, "-o", str(out), "--label-fraction", "10%,100%", "--epochs", "1"])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "label fraction 10% of 24 train tiles leaves 2" in lines[0], r.output
    assert not out.exists()


def test_the_help_names_the_threshold_and_the_defaults_match_train():
    r = runner.invoke(app, ["sweep", "--help"])
    assert f"fewer than {MIN_TRAIN_TILES} train tiles" in " ".join(r.output.split()) and "MIN_TRAIN_TILES" in r.output
    params, d = inspect.signature(sweep_cmd).parameters, TrainConfig()
    for name in ("epochs", "batch_size", "lr", "patience", "seed", "device"):
        assert params[name].default == getattr(d, name), name
