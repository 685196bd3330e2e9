"""A small annotated cohort cut from the bundled CC0 slide: pyramidal TIFFs, the .svs, QuPath GeoJSON, a label mask.

Slides (level-0 px, cut from ``cmu_small_region.svs``, H&E skin):

- ``a.tif``: 768 px at 0.5 um/px from (700, 1200); GeoJSON in QuPath 0.4's export format: a tumor polygon with
  a hole, a stroma MultiPolygon (two parts), a detection inside the hole, and a polygon of a class outside the map.
- ``b.tif``: 768 px declared at 0.25 um/px from (1100, 1900), so its tiles cover twice the level-0 pixels;
  QuPath 0.2's format (a bare list of features, ``colorRGB``).
- ``cmu_small_region.svs`` itself (2220x2967 at 0.499 um/px); one polygon.
- ``c.tif``: 640 px at 0.5 um/px from (600, 2300), annotated by a label-mask PNG at downsample 4 (the slide
  appended to a grown store).

Classes: tumor, stroma, inflammatory.  Patients: a and b are P1, the .svs P2, c P3.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

SVS = Path(__file__).parents[1] / "data" / "cmu_small_region.svs"
# 128 px tiles at 1 um/px: 52 tiles for the three slides, a few seconds with the tiny model.
# One torch thread: CPU features differ in their last bits between thread counts.
COHORT_ARGS = ["--tile-size", "128", "--mpp", "1.0", "--unknown-classes", "ignore", "--threads", "1",
               "--batch-size", "4", "--quiet"]
CLASSES = ("tumor", "stroma", "inflammatory")
COLOURS = {"tumor": [200, 0, 0], "stroma": [150, 200, 150], "inflammatory": [230, 200, 0], "Necrosis": [50, 50, 50]}


def write_pyramid(path: Path, origin: tuple[int, int], size: int, mpp: float, levels: int = 2) -> Path:
    """A tiled pyramidal TIFF of a region of the bundled slide, recording ``mpp``."""
    import tifffile
    import tiffslide

    region = np.asarray(tiffslide.TiffSlide(SVS).read_region(origin, 0, (size, size)))[..., :3]
    res = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path) as tif:
        tif.write(region, subifds=levels - 1, tile=(128, 128), photometric="rgb", resolution=res,
                  resolutionunit="CENTIMETER")
        for k in range(1, levels):
            tif.write(region[:: 2**k, :: 2**k], subfiletype=1, tile=(128, 128), photometric="rgb",
                      resolution=(res[0] / 2**k, res[1] / 2**k), resolutionunit="CENTIMETER")
    return path


def write_blank(path: Path, size: int = 512) -> Path:
    """A pyramidal TIFF of glass with sensor noise: no tissue."""
    import tifffile

    rng = np.random.default_rng(0)
    img = (242 + rng.integers(-3, 4, (size, size, 3))).astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, subifds=1, tile=(128, 128), photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(img[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb")
    return path


def feature(geometry: dict, name: str | None, object_type: str = "annotation", old: bool = False) -> dict:
    """One feature as QuPath exports it (0.4: ``color`` list; 0.2 (``old``): packed ``colorRGB``)."""
    props: dict = {"objectType": object_type, "isLocked": False}
    if name is not None:
        r, g, b = COLOURS.get(name, [0, 0, 0])
        props["classification"] = ({"name": name, "colorRGB": -(1 << 24) + (r << 16) + (g << 8) + b} if old
                                   else {"name": name, "color": [r, g, b]})
    return {"type": "Feature", "id": f"{abs(hash(json.dumps(geometry))) % 10**8:08d}", "geometry": geometry,
            "properties": props}


def ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": [list(r) for r in rings]}


def a_features() -> list[dict]:
    hexagon = [[300.5, 120.0], [520.0, 140.0], [600.0, 330.0], [470.0, 500.0], [260.0, 470.0], [200.0, 260.0],
               [300.5, 120.0]]
    return [
        feature(polygon(hexagon, ring(350, 250, 450, 350)), "tumor"),  # a polygon with a hole
        feature({"type": "MultiPolygon", "coordinates": [[ring(40, 560, 300, 730)],
                                                         [ring(560, 540, 740, 740), ring(600, 600, 640, 640)]]},
                "stroma"),  # two parts, the second with a hole
        feature(polygon(ring(370, 270, 430, 330)), "inflammatory", "detection"),  # a cell inside the hole
        feature(polygon(ring(620, 20, 740, 100)), "Necrosis"),  # a class outside the map
        feature({"type": "Point", "coordinates": [100, 100]}, "tumor"),  # a point: no area, skipped
    ]


def b_features() -> list[dict]:
    return [feature(polygon(ring(64, 64, 700, 400)), "stroma", old=True),
            feature(polygon([[100, 500], [650, 450], [600, 720], [120, 700], [100, 500]]), "tumor", old=True)]


def svs_features() -> list[dict]:
    return [feature(polygon([[900, 1300], [1300, 1350], [1350, 1800], [950, 1750], [900, 1300]]), "inflammatory")]


def write_geojson(path: Path, features: list[dict], collection: bool = True) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features} if collection else features))
    return path


MASK_DOWNSAMPLE = 4
MASK_TUMOR = (10, 60, 10, 70)  # mask rows and columns, at the downsample
MASK_STROMA = (110, 150, 0, 160)


def write_mask(path: Path, size: int = 640) -> Path:
    """A label-mask PNG of ``c.tif`` at downsample 4: tumor top-left block, stroma bottom band, rest unannotated."""
    from PIL import Image

    n = size // MASK_DOWNSAMPLE
    m = np.full((n, n), 255, np.uint8)
    for k, (r0, r1, c0, c1) in enumerate((MASK_TUMOR, MASK_STROMA)):
        m[r0:r1, c0:c1] = k
    Image.fromarray(m).save(path)
    return path


def box_areas_of_mask() -> tuple[list, list]:
    """The mask's class blocks as level-0 rectangles (x0, y0, x1, y1): tumor, stroma."""
    d = MASK_DOWNSAMPLE
    return [[(c0 * d, r0 * d, c1 * d, r1 * d)] for r0, r1, c0, c1 in (MASK_TUMOR, MASK_STROMA)]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["slide", "annotations", "split", "patient", "mpp"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def make_cohort(root: Path) -> dict[str, Path]:
    """The slides, annotations, classes.txt and two manifests (three slides; the same plus c.tif)."""
    (root / "slides").mkdir(parents=True)
    (root / "ann").mkdir()
    p = {
        "a": write_pyramid(root / "slides" / "a.tif", (700, 1200), 768, 0.5),
        "b": write_pyramid(root / "slides" / "b.tif", (1100, 1900), 768, 0.25),
        "c": write_pyramid(root / "slides" / "c.tif", (600, 2300), 640, 0.5),
        "svs": SVS,
        "a_ann": write_geojson(root / "ann" / "a.geojson", a_features()),
        "b_ann": write_geojson(root / "ann" / "b.geojson", b_features(), collection=False),
        "svs_ann": write_geojson(root / "ann" / "svs.geojson", svs_features()),
        "c_ann": write_mask(root / "ann" / "c_mask.png"),
    }
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rows = [{"slide": "slides/a.tif", "annotations": "ann/a.geojson", "patient": "P1"},
            {"slide": "slides/b.tif", "annotations": "ann/b.geojson", "patient": "P1"},
            {"slide": str(SVS), "annotations": "ann/svs.geojson", "patient": "P2"}]
    p["manifest"] = write_manifest(root / "cohort.csv", rows)
    p["manifest4"] = write_manifest(root / "cohort4.csv", rows + [
        {"slide": "slides/c.tif", "annotations": "ann/c_mask.png", "patient": "P3"}])
    p["root"] = root
    return p


def extract(source, out, *extra) -> tuple[int, str]:
    """``pathsegdiff extract`` of the cohort's settings (plus ``extra``): (exit code, output)."""
    from typer.testing import CliRunner

    from pathsegdiff.cli import app

    r = CliRunner().invoke(app, ["extract", str(source), "-o", str(out), *COHORT_ARGS, *map(str, extra)])
    return r.exit_code, r.output
