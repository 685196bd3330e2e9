"""What ``--unknown-classes ignore`` dropped, per slide: said at the start of the run and kept in the store.

Slide ``a.tif`` of the cohort (``helpers/cohort_data.py``) has a polygon of class ``Necrosis`` (not in the class
map) and a point object (no area); ``b.tif`` and the .svs have neither.
"""

from __future__ import annotations

from helpers.cohort_data import extract
from pathsegdiff.store import open_store

A_LINE = ("a.tif: a.geojson: classes not in the class map ignored: 'Necrosis' (1 polygon); "
          "1 point or line object without an area skipped")


def test_a_cohort_store_records_and_prints_what_each_slide_dropped(cohort_store):
    path, output = cohort_store
    assert A_LINE in output
    assert "b.tif: b.geojson" not in output and "cmu_small_region.svs: svs.geojson" not in output
    slides = {s["slide"].rsplit("/", 1)[-1]: s for s in open_store(path).provenance["source"]["slides"]}
    assert slides["a.tif"]["unknown_classes_ignored"] == {"Necrosis": 1} and slides["a.tif"]["without_area"] == 1
    for name in ("b.tif", "cmu_small_region.svs"):
        assert slides[name]["unknown_classes_ignored"] == {} and slides[name]["without_area"] == 0
    assert all(s["format"] == "geojson" and s["polygons"] >= 1 for s in slides.values())


def test_a_single_slide_store_says_and_keeps_the_same(cohort, tmp_path):
    code, output = extract(cohort["a"], tmp_path / "a.zarr", "--annotations", cohort["a_ann"],
                           "--classes", "tumor,stroma,inflammatory")
    assert code == 0, output
    assert A_LINE in output
    source = open_store(tmp_path / "a.zarr").provenance["source"]
    assert source["unknown_classes_ignored"] == {"Necrosis": 1} and source["without_area"] == 1
