"""Cohorts: CSV manifests and slide folders, their refusals, edge tiles, annotated-only, slides skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.tiles.cohort import read_manifest, slide_folder, tcga_patient
from pathsegdiff.tiles.datasets import SourceConfig, open_source
from pathsegdiff.tiles.wsi import axis_starts

pytest.importorskip("tiffslide")


def _slide(path: Path, size: tuple[int, int] = (320, 256), mpp: float = 0.5) -> Path:
    """A pyramidal TIFF: a pink "tissue" band across the middle and to the bottom edge, glass elsewhere."""
    import tifffile

    img = np.full((size[1], size[0], 3), 240, np.uint8)
    img[size[1] // 4 :, 64:] = (180, 60, 150)
    opts = dict(photometric="rgb", tile=(64, 64), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, subifds=1, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        tif.write(img[::2, ::2], subfiletype=1, resolution=(5e3 / mpp, 5e3 / mpp), **opts)
    return path


def _geojson(path: Path, box, name="tumor") -> Path:
    x0, y0, x1, y1 = box
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "annotation", "classification": {"name": name}}}]}))
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def root(tmp_path):
    (tmp_path / "slides").mkdir()
    _slide(tmp_path / "slides" / "TCGA-A1-A0SK-01Z-00-DX1.tif")
    _slide(tmp_path / "slides" / "s2.tif", (256, 320))
    (tmp_path / "classes.txt").write_text("tumor\nstroma\n")
    _geojson(tmp_path / "s2.geojson", (64, 96, 192, 160))
    return tmp_path


def test_manifest_rows_with_relative_paths_splits_patients_and_mpp(root):
    m = _csv(root / "m.csv", "slide,annotations,split,patient,mpp,notes\n"
                             "slides/TCGA-A1-A0SK-01Z-00-DX1.tif,,train,P1,,first\n"
                             "slides/s2.tif,s2.geojson,test,P2,0.25,\n")
    entries = read_manifest(m)
    assert [(e.slide.name, e.split, e.patient, e.mpp) for e in entries] == [
        ("TCGA-A1-A0SK-01Z-00-DX1.tif", "train", "P1", None), ("s2.tif", "test", "P2", 0.25)]
    assert entries[1].annotations == (root / "s2.geojson").resolve()
    src = open_source(m, SourceConfig(tile_size=64))
    assert src.kind == "cohort" and [s.path.name for s in src.slides] == [e.slide.name for e in entries]
    assert src.class_names == ("tumor", "stroma")
    s2 = [r for r in src.records if r.slide_id == "s2"]
    assert {r.split for r in s2} == {"test"} and {r.patient for r in s2} == {"P2"} and s2[0].mpp == 0.5
    # s2 is declared at 0.25 um/px: a 64 px tile at 0.5 spans 128 level-0 px, read from level 1
    assert src.slides[1].footprint == 128 and {r.level for r in s2} == {1}
    sample = src.load(src.records.index(s2[0]))
    assert sample.labels.shape == (64, 64) and sample.rgb.shape == (3, 64, 64)
    assert {r.annotated > 0 for r in s2} == {True, False}
    first = [r for r in src.records if r.slide_id != "s2"]
    assert all(np.isnan(r.annotated) for r in first)  # no annotations: unknown, not zero
    assert (src.load(0).labels == 255).all()  # a slide without annotations in a labelled cohort: all ignore


@pytest.mark.parametrize("text, says", [
    ("path\nslides/s2.tif\n", "m.csv: the manifest has no 'slide' column (columns: path)"),
    ("slide\n", "m.csv: the manifest lists no slides"),
    ("slide\nslides/s2.tif\nslides/gone.svs\n", "m.csv line 3: slide slides/gone.svs not found"),
    ("slide,annotations\nslides/s2.tif,nope.geojson\n", "m.csv line 2: annotations nope.geojson not found"),
    ("slide\nslides/s2.tif\n./slides/s2.tif\n", "m.csv line 3: slide s2.tif is listed twice (the same file as "),
    ("slide,split\nslides/s2.tif,training\n", "m.csv line 2: split 'training' must be train, val, test or empty"),
    ("slide,mpp\nslides/s2.tif,fast\n", "m.csv line 2: mpp 'fast' is not a positive number of um/px"),
    ("slide,patient,split\nslides/s2.tif,P1,train\nslides/TCGA-A1-A0SK-01Z-00-DX1.tif,P1,test\n",
     "m.csv: patient P1 is in split 'train' ("),
])
def test_manifest_refusals_name_the_file_and_line(root, text, says):
    with pytest.raises(InputError) as e:
        read_manifest(_csv(root / "m.csv", text))
    assert says in str(e.value), str(e.value)


def test_same_stem_in_two_folders_is_one_slide_to_the_store(root):
    (root / "other").mkdir()
    _slide(root / "other" / "s2.tif")
    with pytest.raises(InputError, match=r"line 3: slide s2\.tif is listed twice \(the same slide id 's2'"):
        read_manifest(_csv(root / "m.csv", "slide\nslides/s2.tif\nother/s2.tif\n"))


def test_a_folder_of_slides_finds_annotations_and_tcga_patients(root):
    (root / "slides" / "annotations").mkdir()
    _geojson(root / "slides" / "annotations" / "s2.geojson", (0, 0, 64, 64))
    (root / "slides" / "notes.txt").write_text("not a slide")
    entries = slide_folder(root / "slides")
    assert [(e.slide.name, e.patient, e.annotations and e.annotations.name) for e in entries] == [
        ("TCGA-A1-A0SK-01Z-00-DX1.tif", "TCGA-A1-A0SK", None), ("s2.tif", "", "s2.geojson")]
    assert tcga_patient("TCGA-E2-A14N-01Z-00-DX1.8F9B") == "TCGA-E2-A14N" and tcga_patient("slide7") == ""
    (root / "slides" / "classes.txt").write_text("tumor\n")
    src = open_source(root / "slides", SourceConfig(tile_size=64))  # the first refusal, now a cohort
    assert src.kind == "cohort" and len(src.slides) == 2
    with pytest.raises(InputError, match=r"empty: no slide files"):
        (root / "empty").mkdir()
        slide_folder(root / "empty")


def test_edge_tiles_are_shifted_back_to_the_border_and_annotated_only_keeps_annotated_tiles(root):
    assert axis_starts(320, 64, 64) == [0, 64, 128, 192, 256]
    assert axis_starts(300, 64, 64) == [0, 64, 128, 192, 236]  # the last tile ends at the border
    assert axis_starts(300, 128.5, 128.5) == [0, 128, 171]
    assert axis_starts(60, 64, 64) == []
    s2 = root / "slides" / "s2.tif"
    src = open_source(s2, SourceConfig(tile_size=96, min_tissue=0.0))  # 256 x 320: the tissue reaches the bottom
    assert max(r.y for r in src.records) == 320 - 96 and max(r.x for r in src.records) == 256 - 96
    ann = open_source(s2, SourceConfig(tile_size=64, annotations=str(root / "s2.geojson"), class_names=("tumor",),
                                       annotated_only=True))
    assert sorted((r.x, r.y) for r in ann.records) == [(64, 64), (64, 128), (128, 64), (128, 128)]
    assert all(0 < r.annotated <= 1 for r in ann.records)
    with pytest.raises(InputError, match=r"s2\.tif: no tile holds annotated pixels"):
        ring = [[70, 70], [120, 70], [120, 120], [70, 120], [70, 70]]  # a polygon of a class that is ignored
        (root / "other.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {"objectType": "annotation", "classification": {"name": "necrosis"}}}]}))
        open_source(s2, SourceConfig(tile_size=64, annotations=str(root / "other.geojson"), class_names=("tumor",),
                                     unknown_classes="ignore", annotated_only=True))
    with pytest.raises(ConfigError, match="--annotations is for one slide"):
        open_source(root / "slides", SourceConfig(annotations=str(root / "s2.geojson")))


def test_skip_errors_leaves_out_unusable_slides_and_names_them(root):
    (root / "slides" / "broken.svs").write_bytes(b"II*\x00" + b"\x00" * 64)
    m = _csv(root / "m.csv", "slide\nslides/s2.tif\nslides/broken.svs\n")
    with pytest.raises(InputError, match=r"broken\.svs: cannot open as a slide"):
        open_source(m, SourceConfig(tile_size=64))
    src = open_source(m, SourceConfig(tile_size=64, skip_errors=True))
    assert [s.path.name for s in src.slides] == ["s2.tif"] and list(src.skipped) == [str(root / "slides" / "broken.svs")]
    assert "cannot open as a slide" in src.describe()["skipped_slides"][str(root / "slides" / "broken.svs")]
