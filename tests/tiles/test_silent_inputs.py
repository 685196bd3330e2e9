"""Inputs that were accepted without a word: empty or other-level GeoJSON, a `Slide` header, files in a slide folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathsegdiff.errors import InputError
from pathsegdiff.tiles.annotations import ClassMap, PolygonLabels
from pathsegdiff.tiles.cohort import folder_skips, read_manifest, slide_folder
from pathsegdiff.tiles.datasets import SourceConfig, open_source

pytest.importorskip("tiffslide")
CLASSES = ClassMap(("tumor", "stroma"))


def _polygon(x0, y0, x1, y1, name="tumor"):
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": name}}}


def _slide(path: Path, size: int = 512, mpp: float = 0.5) -> Path:
    """A two-level pyramidal TIFF: pink tissue on glass."""
    import tifffile

    img = np.full((size, size, 3), 240, np.uint8)
    img[size // 4 :, size // 8 :] = (180, 60, 150)
    opts = dict(photometric="rgb", tile=(64, 64), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, subifds=1, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        tif.write(img[::2, ::2], subfiletype=1, resolution=(5e3 / mpp, 5e3 / mpp), **opts)
    return path


def test_an_empty_feature_collection_is_refused_naming_the_file(tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="empty.geojson: no annotation with an area"):
        PolygonLabels(empty, CLASSES, (512, 512), "s.tif")


def test_polygons_inside_a_lower_level_are_named(tmp_path):
    doc = tmp_path / "a.geojson"
    doc.write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon(10, 10, 200, 200)]}))
    labels = PolygonLabels(doc, CLASSES, (1024, 1024), "s.tif", level_sizes=((1024, 1024), (512, 512), (256, 256)))
    assert len(labels.notes) == 1 and "pyramid level 2" in labels.notes[0] and "a.geojson" in labels.notes[0]
    spread = tmp_path / "b.geojson"
    spread.write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon(10, 10, 900, 900)]}))
    assert PolygonLabels(spread, CLASSES, (1024, 1024), "s.tif", level_sizes=((1024, 1024), (512, 512))).notes == []


def test_the_warning_reaches_a_slide_source(tmp_path):
    slide = _slide(tmp_path / "s.tif")
    doc = tmp_path / "s.geojson"
    doc.write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon(130, 130, 250, 250)]}))
    (tmp_path / "classes.txt").write_text("tumor\nstroma\n")
    src = open_source(str(tmp_path), SourceConfig(tile_size=128, min_tissue=0.1))
    assert any("pyramid level 1" in n for n in src.notes), src.notes


def test_a_manifest_header_is_read_in_any_case(tmp_path):
    _slide(tmp_path / "a.tif")
    (tmp_path / "m.csv").write_text("Slide,Patient,Split\na.tif,P1,train\n")
    (entry,) = read_manifest(tmp_path / "m.csv")
    assert entry.slide.name == "a.tif" and entry.patient == "P1" and entry.split == "train"


def test_a_slide_folder_says_which_files_it_skips_and_reads_a_plain_tiff(tmp_path):
    from PIL import Image

    _slide(tmp_path / "a.tif")
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(tmp_path / "plain.tif")
    (tmp_path / "thesis.docx").write_bytes(b"x")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "mask_only.tif")  # a TIFF that is no RGB image
    assert [e.slide.name for e in slide_folder(tmp_path)] == ["a.tif", "plain.tif"]
    skips = folder_skips(tmp_path)
    assert any(s.startswith("thesis.docx: not a slide format") for s in skips), skips
    assert any(s.startswith("mask_only.tif: a TIFF that holds no RGB image") for s in skips), skips
