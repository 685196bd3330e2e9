"""``compare``: deltas between two runs' results.json in points, judged against the seed-to-seed spread."""

from __future__ import annotations

import pytest

from helpers.run_results import write_run
from pathsegdiff.errors import InputError
from pathsegdiff.train_head.compare import compare_runs, format_comparison, load_results


def test_delta_in_points_with_paired_spread(tmp_path):
    a = write_run(tmp_path / "a", [0.60, 0.62, 0.64])
    b = write_run(tmp_path / "b", [0.59, 0.62, 0.62])
    c = compare_runs(a, b)
    m = c.delta("miou")
    assert m.a == pytest.approx(62.0) and m.b == pytest.approx(61.0) and m.delta == pytest.approx(-1.0)
    assert m.a_std == pytest.approx(2.0) and m.spread == pytest.approx(2.0)
    assert m.paired_std == pytest.approx(1.0)  # per-seed differences -1, 0, -2
    assert m.within()  # 1 point < the 2-point seed spread
    assert c.delta("iou eosin-dense").delta == pytest.approx(-1.0)
    assert not c.warnings and c.setup["seeds"] == [0, 1, 2]


def test_a_delta_beyond_tolerance_and_spread_differs(tmp_path):
    a = write_run(tmp_path / "a", [0.600, 0.601, 0.602])
    b = write_run(tmp_path / "b", [0.580, 0.581, 0.582])
    c = compare_runs(a, b)
    assert c.delta("miou").within() is False
    assert compare_runs(a, b, tolerance=3.0).delta("miou").within() is True
    text = format_comparison(c)
    assert "| miou | 60.10 ± 0.10 | 58.10 ± 0.10 | -2.00 ± 0.00 | 0.10 | differs |" in text


def test_small_delta_is_within_the_tolerance(tmp_path):
    a = write_run(tmp_path / "a", [0.600, 0.601, 0.602])
    b = write_run(tmp_path / "b", [0.598, 0.599, 0.600])
    text = format_comparison(compare_runs(a, b))
    assert "| miou | 60.10 ± 0.10 | 59.90 ± 0.10 | -0.20 ± 0.00 | 0.10 | within 0.5 pt |" in text


def test_setup_differences_and_single_seeds_are_warned(tmp_path):
    a = write_run(tmp_path / "a", [0.6])
    b = write_run(tmp_path / "b", [0.6], seeds=[5], head="linear")
    c = compare_runs(a, b)
    text = format_comparison(c)
    assert "head differs: A 'fcn', B 'linear'" in text and "seeds differs" in text
    assert "--runs 3" in text
    assert c.delta("miou").spread is None and c.delta("miou").paired_std is None
    assert c.to_dict()["deltas"][0]["within"] is True


def test_results_json_path_and_bad_inputs(tmp_path):
    a = write_run(tmp_path / "a", [0.6, 0.61])
    assert load_results(a / "results.json")["miou"] == pytest.approx(0.605)
    with pytest.raises(InputError, match="no results.json"):
        load_results(tmp_path / "missing")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(InputError, match="no metrics"):
        load_results(tmp_path / "junk.json")
    other = write_run(tmp_path / "b", [0.6, 0.61], class_names=["x", "y"])
    with pytest.raises(InputError, match="different classes"):
        compare_runs(a, other)
