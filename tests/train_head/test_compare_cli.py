"""``pathsegdiff compare RUN_A RUN_B`` on the command line: the table, --json, and a bad run in one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from helpers.run_results import write_run
from pathsegdiff.cli import app

runner = CliRunner()


def test_compare_prints_the_deltas_and_their_spread(tmp_path):
    a = write_run(tmp_path / "a", [0.60, 0.62, 0.64])
    b = write_run(tmp_path / "b", [0.59, 0.62, 0.62])
    r = runner.invoke(app, ["compare", str(a), str(b)])
    assert r.exit_code == 0, r.output
    assert "| miou | 62.00 ± 2.00 | 61.00 ± 1.73 | -1.00" in r.output
    r = runner.invoke(app, ["compare", str(a), str(b), "--json", "--tolerance", "3"])
    d = {x["metric"]: x for x in json.loads(r.output)["deltas"]}
    assert r.exit_code == 0 and d["miou"]["within"] is True and json.loads(r.output)["tolerance_points"] == 3


def test_compare_refuses_a_directory_without_results(tmp_path):
    a = write_run(tmp_path / "a", [0.60, 0.62])
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["compare", str(a), str(tmp_path / "empty")])
    assert r.exit_code == 1 and "no results.json" in r.output and len(r.output.strip().splitlines()) == 1
