"""One extraction plan for both runners: a distributed run gives the in-process run's store.

Every chunk identical, QC thumbnails and skipped-slide records identical, and
the root attributes equal apart from the command line and the runner's own
record (scheduler address, worker count); for a cohort manifest with a slide
skipped, for a grow whose new slide comes first in the manifest, and for a
PCA preset on a new store (calibrated on the coordinator).  Both runners use
one torch thread (CPU features differ in their last bits between counts).
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pytest

from helpers import cohort_data as cd
from helpers.cohort_data import extract
from helpers.stores import store_bytes

pytest.importorskip("distributed")
TILES = Path(__file__).parents[1] / "data" / "he_tiles"


@pytest.fixture(scope="module")
def scheduler():
    """A local cluster of two single-threaded worker processes; its scheduler address."""
    from pathsegdiff.extract.run.cluster import ClusterConfig, connect

    with connect(ClusterConfig(workers=2)) as client:
        yield client.scheduler.address


RUNNER_ONLY = ("command", "created", "at", "distributed")  # the command line, clock times, scheduler and workers


def _without_runner(doc):
    if isinstance(doc, dict):
        return {k: _without_runner(v) for k, v in doc.items() if k not in RUNNER_ONLY}
    if isinstance(doc, list):
        return [_without_runner(v) for v in doc]
    return doc


def _root_attrs(store: Path) -> dict:
    return _without_runner(json.loads((store / "zarr.json").read_text())["attributes"]["pathsegdiff"])


def _same_store(a: Path, b: Path) -> None:
    da, db = store_bytes(a), store_bytes(b)
    da.pop("zarr.json"), db.pop("zarr.json")
    assert sorted(da) == sorted(db)
    assert [k for k in da if da[k] != db[k]] == []
    ra, rb = (json.dumps(_root_attrs(p), indent=1, sort_keys=True).splitlines() for p in (a, b))
    assert ra == rb, "\n".join(difflib.unified_diff(ra, rb, lineterm="", n=1))
    qa, qb = Path(str(a) + ".qc"), Path(str(b) + ".qc")
    assert qa.is_dir() == qb.is_dir()
    if qa.is_dir():
        assert {p.name: p.read_bytes() for p in qa.iterdir()} == {p.name: p.read_bytes() for p in qb.iterdir()}
    la, lb = Path(str(a) + ".errors.log"), Path(str(b) + ".errors.log")
    assert (la.read_text() if la.exists() else "") == (lb.read_text() if lb.exists() else "")


def test_a_cohort_with_a_skipped_slide_gives_the_in_process_store(cohort, scheduler, tmp_path):
    blank = cd.write_blank(tmp_path / "blank.tif")
    rows = [{"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1"},
            {"slide": str(blank), "annotations": "", "patient": "P9"},
            {"slide": str(cohort["b"]), "annotations": str(cohort["b_ann"]), "patient": "P1"},
            {"slide": str(cohort["svs"]), "annotations": str(cohort["svs_ann"]), "patient": "P2"}]
    shutil.copy(cohort["root"] / "classes.txt", tmp_path / "classes.txt")
    manifest = cd.write_manifest(tmp_path / "m.csv", rows)
    code, output = extract(manifest, tmp_path / "one.zarr", "--skip-errors")
    assert code == 0, output
    code, output = extract(manifest, tmp_path / "many.zarr", "--skip-errors", "--scheduler", scheduler)
    assert code == 0, output
    assert "on 2 workers" in output and "blank" in Path(str(tmp_path / "many.zarr") + ".errors.log").read_text()
    assert any(Path(str(tmp_path / "many.zarr") + ".qc").iterdir())  # QC thumbnails written by the coordinator
    _same_store(tmp_path / "one.zarr", tmp_path / "many.zarr")


def test_a_grow_whose_new_slide_comes_first_gives_the_in_process_store(cohort, cohort_store, scheduler, tmp_path):
    rows = [{"slide": str(cohort["c"]), "annotations": str(cohort["c_ann"]), "patient": "P3"},
            {"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1"},
            {"slide": str(cohort["b"]), "annotations": str(cohort["b_ann"]), "patient": "P1"},
            {"slide": str(cohort["svs"]), "annotations": str(cohort["svs_ann"]), "patient": "P2"}]
    shutil.copy(cohort["root"] / "classes.txt", tmp_path / "classes.txt")
    manifest = cd.write_manifest(tmp_path / "m.csv", rows)
    for name, extra in (("one.zarr", ()), ("many.zarr", ("--scheduler", scheduler))):
        shutil.copytree(cohort_store[0], tmp_path / name)
        qc = Path(str(cohort_store[0]) + ".qc")
        if qc.is_dir():
            shutil.copytree(qc, Path(str(tmp_path / name) + ".qc"))
        code, output = extract(manifest, tmp_path / name, *extra)
        assert code == 0 and "9 appended" in output, output
    _same_store(tmp_path / "one.zarr", tmp_path / "many.zarr")


def test_a_pca_preset_on_a_new_store_is_calibrated_on_the_coordinator(scheduler, tmp_path):
    from typer.testing import CliRunner

    from pathsegdiff.cli import app

    args = [str(TILES), "--tile-size", "64", "--threads", "1", "--batch-size", "4", "--quiet",
            "--compact", "pca8-int8", "--calibration-tiles", "6"]
    one = CliRunner().invoke(app, ["extract", *args, "-o", str(tmp_path / "one.zarr")])
    assert one.exit_code == 0, one.output
    many = CliRunner().invoke(app, ["extract", *args, "-o", str(tmp_path / "many.zarr"), "--scheduler", scheduler])
    assert many.exit_code == 0, many.output
    assert "calibrating pca8-int8" in many.output
    _same_store(tmp_path / "one.zarr", tmp_path / "many.zarr")


def test_a_built_in_model_id_is_not_taken_for_a_path(scheduler, tmp_path):
    from typer.testing import CliRunner

    from pathsegdiff.cli import app

    r = CliRunner().invoke(app, ["extract", str(TILES), "-o", str(tmp_path / "dit.zarr"), "--model", "tiny-dit",
                                 "--tile-size", "64", "--threads", "1", "--limit", "4", "--quiet",
                                 "--scheduler", scheduler])
    assert r.exit_code == 0, r.output
    assert "4 tiles written" in r.output
