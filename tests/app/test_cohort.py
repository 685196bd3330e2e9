"""A cohort of annotated slides in one store: the tile table, labels against polygon areas, QC, info, refusals.

The cohort (``helpers/cohort_data.py``): two pyramidal TIFFs cut from the bundled CC0 slide (one at 0.5 um/px, one
declared at 0.25) and the .svs itself, with QuPath GeoJSON (a polygon with a hole, a MultiPolygon, a detection,
a class outside the map), extracted at 1 um/px in 128 px tiles with the tiny model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from typer.testing import CliRunner

from helpers import cohort_data as cd
from helpers.cohort_data import extract
from helpers.stores import store_bytes
from pathsegdiff.cli import app
from pathsegdiff.colours import class_colour
from pathsegdiff.store import open_store
from pathsegdiff.store.tile_table import full_table
from pathsegdiff.store.commands.verify import verify_store

NATIVE_MPP = {"a": 0.5, "b": 0.25, "cmu_small_region": 0.499}
FEATURES = {"a": cd.a_features, "b": cd.b_features, "cmu_small_region": cd.svs_features}
runner = CliRunner()


def test_one_store_records_slide_patient_level_position_and_mpp(cohort_store):
    path, output = cohort_store
    fs = open_store(path)
    t = full_table(fs)
    slides = list(dict.fromkeys(t["slide_id"]))
    assert slides == ["a", "b", "cmu_small_region"]
    rows = {s: np.flatnonzero(t["slide_id"] == s) for s in slides}
    assert [len(rows[s]) for s in slides] == [9, 4, 39]
    assert {s: set(t["patient"][rows[s]]) for s in slides} == {"a": {"P1"}, "b": {"P1"}, "cmu_small_region": {"P2"}}
    # a 128 px tile at 1 um/px spans 256 level-0 px of a (0.5 um/px): read from its level 1 (downsample 2);
    # b's 512 px from its level 1 and a resize; the .svs has one level
    assert {s: set(t["level"][rows[s]]) for s in slides} == {"a": {1}, "b": {1}, "cmu_small_region": {0}}
    assert np.allclose(t["mpp"], 1.0)
    assert sorted(zip(t["x"][rows["b"]], t["y"][rows["b"]])) == [(0, 0), (0, 256), (256, 0), (256, 256)]
    assert t["y"][rows["cmu_small_region"]].max() == 2967 - 257  # the bottom row is shifted to the slide's edge
    assert all(tid == f"{s}_{x}_{y}" for tid, s, x, y in zip(t["tile_id"], t["slide_id"], t["x"], t["y"]))
    assert (t["annotated"] >= 0).all() and (t["annotated"] > 0).sum() == 9 + 4 + 7
    assert fs.schema.class_names == cd.CLASSES and verify_store(path).ok
    assert len(fs.written()) == 52 and "52 tiles written" in output


def _expected_pixels(slide: str, tiles: list[tuple[int, int]], footprint: float, tile: int) -> np.ndarray:
    """Pixels per class the polygons cover at the analysis resolution: exact areas from shapely, not rasterised."""
    from shapely.geometry import shape

    scale2 = (footprint / tile) ** 2  # level-0 px^2 per analysis pixel
    out = np.zeros(len(cd.CLASSES))
    for f in FEATURES[slide]():
        name = f["properties"]["classification"]["name"]
        geom = shape(f["geometry"])
        if name not in cd.CLASSES or geom.area == 0:
            continue
        for x, y in tiles:
            out[cd.CLASSES.index(name)] += shapely.intersection(geom, shapely.box(x, y, x + footprint, y + footprint)).area
    return out / scale2


def _shoelace(ring) -> float:
    r = np.asarray(ring, float)
    return 0.5 * abs(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(r[:, 1], np.roll(r[:, 0], -1)))


def test_rasterised_labels_equal_the_polygons_areas_within_one_percent(cohort_store):
    fs = open_store(cohort_store[0])
    t = fs.table()
    report = []
    for slide, native in NATIVE_MPP.items():
        idx = np.flatnonzero(t["slide_id"] == slide)
        got = np.zeros(256, np.int64)
        for i in idx:
            got += np.bincount(fs.read_labels(int(i)).ravel(), minlength=256)
        footprint = 128 * 1.0 / native
        want = _expected_pixels(slide, [(int(t["x"][i]), int(t["y"][i])) for i in idx], footprint, 128)
        for k, name in enumerate(cd.CLASSES):
            if want[k]:
                report.append(f"{slide} {name}: {got[k]} px rasterised, {want[k]:.1f} from the polygons' areas "
                              f"({(got[k] - want[k]) / want[k]:+.3%})")
                assert abs(got[k] - want[k]) <= 0.01 * want[k], report[-1]
            else:
                assert got[k] == 0
        assert got[len(cd.CLASSES):255].sum() == 0  # only class ids and ignore
    print("\n".join(report))
    # a.tif's tiles do not overlap: its totals are the shoelace areas of QuPath's rings, divided by 2 x 2
    a = fs.table()["slide_id"] == "a"
    counts = sum(np.bincount(fs.read_labels(int(i)).ravel(), minlength=256) for i in np.flatnonzero(a))
    tumor, stroma, cell = (f["geometry"]["coordinates"] for f in cd.a_features()[:3])
    assert abs(counts[0] - (_shoelace(tumor[0]) - _shoelace(tumor[1])) / 4) <= 0.01 * counts[0]
    assert abs(counts[1] - (_shoelace(stroma[0][0]) + _shoelace(stroma[1][0]) - _shoelace(stroma[1][1])) / 4) <= 0.01 * counts[1]
    assert counts[2] == _shoelace(cell[0]) / 4  # the detection inside the hole: a 60 x 60 px square, exactly


def test_qc_thumbnails_and_a_line_per_slide_in_store_info(cohort_store):
    path, output = cohort_store
    qc = Path(str(path) + ".qc")
    assert "QC thumbnails of 3 slide(s)" in output
    for slide in NATIVE_MPP:
        im = np.asarray(Image.open(qc / f"{slide}.png").convert("RGB"))
        assert im.shape[0] > 300 and im.shape[1] >= 320
        assert (np.abs(im.astype(int) - (0, 200, 0)).sum(-1) == 0).any()  # the tissue outline is drawn
        for k in range(len(open_store(path).schema.class_names)):  # legend swatches in the project's colours,
            assert (im == np.array(class_colour(k), np.uint8)).all(-1).sum() >= 100, k  # not QuPath's
    r = runner.invoke(app, ["store", "info", str(path)])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.startswith("  ")}
    assert "patient P1" in lines["a"] and "9 tiles: 9 written, 0 todo, 0 failed; annotated" in lines["a"]
    assert "patient P2" in lines["cmu_small_region"] and "39 tiles" in lines["cmu_small_region"]
    info = json.loads(runner.invoke(app, ["store", "info", str(path), "--json"]).output)
    ann = {d["slide"]: d["annotated"] for d in info["slides"]}
    t = full_table(open_store(path))
    assert ann["b"] == pytest.approx(float(np.mean(t["annotated"][t["slide_id"] == "b"])))


def test_a_class_outside_the_map_is_refused_with_its_count(cohort, tmp_path):
    out = tmp_path / "s.zarr"
    args = ["--tile-size", "128", "--mpp", "1.0", "--quiet"]
    r = runner.invoke(app, ["extract", str(cohort["manifest"]), "-o", str(out), *args])
    assert r.exit_code == 1 and not out.exists()
    assert "a.geojson: 1 polygon of class 'Necrosis' not in the class map (tumor, stroma, inflammatory)" in r.output
    assert "--unknown-classes ignore" in r.output and len(r.output.strip().splitlines()) == 1


def _bad(cohort, root: Path, kind: str) -> Path:
    """A manifest of the three good slides plus one bad row (or with one bad file), as a user would make it."""
    rows = [{"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1"},
            {"slide": str(cohort["b"]), "annotations": str(cohort["b_ann"]), "patient": "P1"},
            {"slide": str(cohort["svs"]), "annotations": str(cohort["svs_ann"]), "patient": "P2"}]
    shutil.copy(cohort["root"] / "classes.txt", root / "classes.txt")
    if kind == "malformed":
        text = cohort["b_ann"].read_text()
        (root / "b.geojson").write_text(text[: len(text) // 2])  # cut short, as a failed copy leaves it
        rows[1]["annotations"] = str(root / "b.geojson")
    elif kind == "outside":  # exported from a larger slide
        cd.write_geojson(root / "far.geojson", [cd.feature(cd.polygon(cd.ring(700, 600, 900, 700)), "tumor")])
        rows[1]["annotations"] = str(root / "far.geojson")
    elif kind == "missing":
        rows.append({"slide": str(root / "gone.svs"), "patient": "P9"})
    elif kind == "duplicate":
        shutil.copy(cohort["a"], root / "a.tif")
        rows.append({"slide": str(root / "a.tif"), "patient": "P1"})
    elif kind == "blank":
        rows.append({"slide": str(cd.write_blank(root / "blank.tif")), "patient": "P4"})
    elif kind == "mask":  # a mask of another slide: 160 x 100 px against a 768 x 768 slide
        Image.fromarray(np.zeros((100, 160), np.uint8)).save(root / "wrong.png")
        rows[0]["annotations"] = str(root / "wrong.png")
    return cd.write_manifest(root / f"{kind}.csv", rows)


@pytest.mark.parametrize("kind, named, says", [
    ("malformed", "b.geojson", "not valid JSON"),
    ("outside", "far.geojson", "feature 0 (tumor) reaches outside b.tif (768x768 px at level 0)"),
    ("missing", "missing.csv line 5", "slide"),
    ("duplicate", "duplicate.csv line 5", "slide a.tif is listed twice"),
    ("blank", "blank.tif", "no tile has 50% tissue"),
    ("mask", "wrong.png", "mask is 160x100 px, not a downsample of a.tif (768x768 px)"),
])
def test_bad_input_is_one_line_naming_the_file_and_leaves_the_store_unchanged(cohort, cohort_store, tmp_path,
                                                                               kind, named, says):
    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    before = store_bytes(store)
    code, output = extract(_bad(cohort, tmp_path, kind), store)
    lines = output.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert named in lines[0] and says in lines[0], lines[0]
    assert store_bytes(store) == before


def test_skip_errors_names_an_unusable_slide_and_goes_on(cohort, cohort_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    rows = [{"slide": str(cohort[k]), "annotations": str(cohort[f"{k}_ann"]), "patient": p}
            for k, p in (("a", "P1"), ("b", "P1"), ("svs", "P2"))] + [{"slide": str(broken), "patient": "P5"}]
    manifest = cd.write_manifest(tmp_path / "m.csv", rows)
    shutil.copy(cohort["root"] / "classes.txt", tmp_path / "classes.txt")
    code, output = extract(manifest, store)
    assert code == 1 and "broken.svs: cannot open as a slide" in output
    code, output = extract(manifest, store, "--skip-errors")
    assert code == 0, output
    assert "skipped" in output and "broken.svs" in output and "0 tiles written" in output
    assert "broken.svs\tslide skipped: " in Path(str(store) + ".errors.log").read_text()
    r = runner.invoke(app, ["store", "info", str(store)])
    assert "broken.svs: skipped (" in r.output and "slides     3 (1 skipped)" in r.output
