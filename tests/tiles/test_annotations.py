"""Annotations as tile labels: QuPath GeoJSON (its export shapes, refusals) and label masks (PNG, pyramidal TIFF)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.tiles.annotations import IGNORE, ClassMap, PolygonLabels, read_geojson
from pathsegdiff.tiles.label_masks import MaskLabels, open_annotations

CLASSES = ClassMap(("tumor", "stroma"))


def _feature(geometry, name=None, object_type="annotation", **cls):
    props = {"objectType": object_type}
    if name is not None:
        props["classification"] = {"name": name, **cls}
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_reads_every_shape_qupath_exports(tmp_path):
    doc = [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 100, 100), _square(40, 40, 60, 60)]}, "Tumor",
                    color=[200, 0, 0]),
           _feature({"type": "MultiPolygon", "coordinates": [[_square(200, 0, 300, 50)], [_square(200, 100, 250, 150)]]},
                    "stroma", colorRGB=-16711936),
           _feature({"type": "Point", "coordinates": [5, 5]}, "tumor"),
           _feature({"type": "LineString", "coordinates": [[0, 0], [9, 9]]}, "tumor"),
           # a freehand outline that crosses itself (a bow tie): repaired, both lobes kept
           _feature({"type": "Polygon", "coordinates": [[[0, 200], [100, 300], [100, 200], [0, 300], [0, 200]]]},
                    None, "detection")]
    for name, content in (("list.json", doc), ("fc.geojson", {"type": "FeatureCollection", "features": doc})):
        shapes, no_area = read_geojson(_write(tmp_path / name, content))
        assert [s.class_name for s in shapes] == ["Tumor", "stroma", "(unclassified)"] and no_area == 2
        assert [s.geometry.area for s in shapes] == [100 * 100 - 20 * 20, 100 * 50 + 50 * 50, 5000]
        assert shapes[0].color == (200, 0, 0) and shapes[1].color == (0, 255, 0) and shapes[2].detection
    one, _ = read_geojson(_write(tmp_path / "one.json", doc[0]))
    assert len(one) == 1


@pytest.mark.parametrize("content, says", [
    ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
    ('{"type": "Topology"}', "expected a FeatureCollection, a list of features or a feature"),
    ('[{"type": "Feature", "properties": {}}]', "feature 0 has no geometry object"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}}]', "feature 0"),
])
def test_malformed_geojson_is_refused_naming_the_file(tmp_path, content, says):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(InputError, match=r"bad\.geojson: .*") as e:
        read_geojson(path)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_polygon_outside_the_slide_and_unknown_classes_are_refused(tmp_path):
    far = _write(tmp_path / "far.geojson", [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 700, 10)]}, "tumor")])
    with pytest.raises(InputError, match=r"far\.geojson: feature 0 \(tumor\) reaches outside s\.tif \(512x512 px"):
        PolygonLabels(far, CLASSES, (512, 512), "s.tif")
    odd = _write(tmp_path / "odd.geojson", [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 9, 9)]}, n)
                                            for n in ("Necrosis", "Necrosis", "Fat", "tumor")])
    with pytest.raises(InputError, match=r"odd\.geojson: 1 polygon of class 'Fat', 2 polygons of class 'Necrosis' not "
                                         r"in the class map \(tumor, stroma\).*--unknown-classes ignore"):
        PolygonLabels(odd, CLASSES, (512, 512))
    labels = PolygonLabels(odd, ClassMap(CLASSES.names, "ignore"), (512, 512))
    assert labels.unknown == {"Necrosis": 2, "Fat": 1}
    with pytest.raises(ConfigError):
        ClassMap(("a", "A"))


def test_rasterising_takes_pixel_centres_paints_detections_last_and_scales(tmp_path):
    doc = [_feature({"type": "Polygon", "coordinates": [_square(10, 10, 50, 50), _square(20, 20, 30, 30)]}, "tumor"),
           _feature({"type": "Polygon", "coordinates": [_square(22, 22, 28, 28)]}, "stroma", "detection"),
           _feature({"type": "Polygon", "coordinates": [_square(0, 0, 64, 64)]}, "Stroma")]  # an annotation under both
    lab = PolygonLabels(_write(tmp_path / "a.geojson", doc), CLASSES, (64, 64))
    full = lab.labels(0, 0, 64, 64, 64, 64)
    # the stroma annotation is painted after the tumor one (file order), then the detection
    assert (full == 1).sum() == 64 * 64 and lab.annotated_fraction(0, 0, 64) == 1.0
    lab = PolygonLabels(_write(tmp_path / "b.geojson", doc[:2]), CLASSES, (64, 64))
    full = lab.labels(0, 0, 64, 64, 64, 64)
    assert (full == 0).sum() == 40 * 40 - 10 * 10 and (full == 1).sum() == 6 * 6 and (full == IGNORE).sum() == 64 * 64 - 1536
    half = lab.labels(0, 0, 64, 64, 32, 32)  # two level-0 px per pixel
    assert (half == 0).sum() == (40 * 40 - 10 * 10) / 4 and (half == 1).sum() == 9
    assert lab.labels(8, 8, 16, 16, 16, 16)[:2].tolist() == [[IGNORE] * 16] * 2  # a window: rows 8, 9 are outside
    assert lab.annotated_fraction(0, 0, 64) == pytest.approx((1600 - 100 + 36) / 64**2)
    assert lab.annotated_fraction(60, 60, 4) == 0.0


def test_label_masks_png_and_pyramidal_tiff_at_a_downsample(tmp_path):
    import tifffile

    m = np.full((32, 48), IGNORE, np.uint8)  # a 192 x 128 px slide at downsample 4
    m[0:8, 0:12], m[16:32, 24:48] = 0, 1
    Image.fromarray(m).save(tmp_path / "m.png")
    with tifffile.TiffWriter(tmp_path / "m.tif") as tif:
        tif.write(m, subifds=1, tile=(16, 16))
        tif.write(m[::2, ::2], subfiletype=1, tile=(16, 16))
    for name in ("m.png", "m.tif"):
        lab = open_annotations(tmp_path / name, CLASSES, (192, 128), "s.tif")
        assert isinstance(lab, MaskLabels) and lab.downsample == 4
        tile = lab.labels(0, 0, 64, 64, 32, 32)  # a 64 level-0 px tile at 32 px: 8 px per mask pixel
        assert (tile == 0).sum() == 24 * 16 and (tile == IGNORE).sum() == 32 * 32 - 24 * 16
        assert (lab.labels(96, 64, 96, 64, 96, 64) == 1).all() and lab.annotated_fraction(96, 64, 64) == 1.0
    with pytest.raises(InputError, match=r"m\.png: mask is 48x32 px, not a downsample of s\.tif \(192x192 px\)"):
        MaskLabels(tmp_path / "m.png", CLASSES.names, (192, 192), "s.tif")
    m[0, 0] = 7
    Image.fromarray(m).save(tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"bad\.png: mask values \[7\] are outside the declared classes"):
        MaskLabels(tmp_path / "bad.png", CLASSES.names, (192, 128))
    with pytest.raises(InputError, match=r"notes\.txt: annotations must be QuPath GeoJSON"):
        (tmp_path / "notes.txt").write_text("x")
        open_annotations(tmp_path / "notes.txt", CLASSES, (192, 128), "s.tif")
