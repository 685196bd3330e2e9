"""`pathsegdiff doctor` reports versions, device, extras, and runs the tiny self-test."""

from typer.testing import CliRunner

from pathsegdiff.cli import app


def test_doctor_runs_self_test():
    r = CliRunner().invoke(app, ["doctor"])
    assert r.exit_code == 0, r.output
    for label in ("pathsegdiff", "torch", "zarr", "device", "free disk", "tiffslide", "s3fs"):
        assert label in r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("self-test")][0]
    assert " ok in " in line, line
