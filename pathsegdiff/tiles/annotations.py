"""Slide annotations as tile labels: QuPath GeoJSON polygons, rasterised per tile.

What QuPath exports (File > Export objects as GeoJSON) is read as it is: a
FeatureCollection, a list of features, or one feature; Polygon and
MultiPolygon geometries (holes included; an invalid ring, such as a
self-crossing freehand outline, is repaired by shapely's ``make_valid``);
the class in ``properties.classification.name`` (no classification:
"(unclassified)"); ``properties.objectType`` "annotation" or a detection
("detection", "cell", "tile").  Points and lines have no area and are
skipped (counted in ``describe()``).  Coordinates are level-0 pixels.

Class names map to ids through a :class:`ClassMap` (``classes.txt`` or
``--classes``; the line number is the id; names match ignoring case).  A name
outside the map is refused with the count of its polygons, or, with
``unknown="ignore"``, painted as the ignore index.  Pixels no polygon covers
are the ignore index.  Paint order: annotations, then detections (the more
specific objects inside them), each in file order; a later object wins.

Rasterising is rasterio's (GDAL's) polygon fill: a pixel takes a polygon's
class when its centre lies inside.  So the labelled pixels of a tile times
the pixel area equal the polygons' area in it, up to the boundary pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathsegdiff.errors import ConfigError, InputError

IGNORE = 255
UNKNOWN_POLICIES = ("refuse", "ignore")
UNCLASSIFIED = "(unclassified)"
DETECTION_TYPES = ("detection", "cell", "tile")
EDGE_TOLERANCE = 1.0  # level-0 px a polygon may pass the slide's border (rounding in exports)


@dataclass(frozen=True)
class ClassMap:
    """Class names (the position is the id) and what to do with a name outside them."""

    names: tuple[str, ...]
    unknown: str = "refuse"

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"--unknown-classes must be refuse or ignore, got {self.unknown!r}")
        folded = [n.strip().casefold() for n in self.names]
        if not self.names or len(set(folded)) != len(folded) or not all(folded):
            raise ConfigError(f"class names must be non-empty and distinct (ignoring case), got {list(self.names)}")
        if len(self.names) >= IGNORE:
            raise ConfigError(f"at most {IGNORE - 1} classes, got {len(self.names)}")

    def id_of(self, name: str) -> int | None:
        folded = name.strip().casefold()
        for k, n in enumerate(self.names):
            if n.strip().casefold() == folded:
                return k
        return None


@dataclass(frozen=True)
class Shape:
    """One polygonal object of a GeoJSON file."""

    geometry: object  # shapely Polygon or MultiPolygon, level-0 pixels
    class_name: str
    detection: bool
    index: int  # feature number in the file
    color: tuple[int, int, int] | None = None


def _features(doc, path: Path) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        return doc["features"]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    raise InputError(f"{path}: not QuPath GeoJSON: expected a FeatureCollection, a list of features or a feature")


def _color(cls: dict) -> tuple[int, int, int] | None:
    if isinstance(cls.get("color"), list) and len(cls["color"]) >= 3:
        return tuple(int(c) for c in cls["color"][:3])
    if isinstance(cls.get("colorRGB"), int):  # QuPath 0.2: packed (A)RGB
        v = cls["colorRGB"] & 0xFFFFFF
        return (v >> 16) & 255, (v >> 8) & 255, v & 255
    return None


def _polygonal(geom):
    """The polygonal part of a geometry (make_valid may return a collection); None when it has no area."""
    import shapely

    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        geom = shapely.union_all(parts) if parts else None
    if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon") or geom.area <= 0:
        return None
    return geom


def read_geojson(path: Path) -> tuple[list[Shape], int]:
    """The polygonal objects of a QuPath GeoJSON file, and how many objects had no area."""
    from shapely.geometry import shape

    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    shapes, no_area = [], 0
    for i, f in enumerate(_features(doc, path)):
        if not isinstance(f, dict) or not isinstance(f.get("geometry"), dict):
            raise InputError(f"{path}: feature {i} has no geometry object")
        props = f.get("properties") or {}
        cls = props.get("classification") or {}
        name = str(cls.get("name") or UNCLASSIFIED) if isinstance(cls, dict) else UNCLASSIFIED
        try:
            geom = shape(f["geometry"])
            geom = _polygonal(geom) if geom.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection") else None
        except Exception as e:  # shapely raises several types for broken coordinates
            raise InputError(f"{path}: feature {i} ({name}): bad geometry ({type(e).__name__}: {e})") from None
        if geom is None:
            no_area += 1
            continue
        detection = str(props.get("objectType", "annotation")).lower() in DETECTION_TYPES
        shapes.append(Shape(geom, name, detection, i, _color(cls) if isinstance(cls, dict) else None))
    return shapes, no_area


def _other_level_note(path: Path, shapes: list[Shape], level_sizes) -> list[str]:
    """A warning when every polygon lies inside the extent of a lower-resolution level: GeoJSON exported in that
    level's coordinates, not level 0's (QuPath exports level-0 pixels)."""
    if len(level_sizes) < 2:
        return []
    x1 = max(s.geometry.bounds[2] for s in shapes)
    y1 = max(s.geometry.bounds[3] for s in shapes)
    inside = [k for k, (w, h) in enumerate(level_sizes) if k > 0 and x1 <= w and y1 <= h]
    if not inside:
        return []
    k = inside[-1]  # the smallest level that still holds every polygon
    w, h = level_sizes[k]
    return [f"warning: {path}: every polygon lies inside {w}x{h} px, the extent of pyramid level {k}; if it was "
            f"exported in level {k}'s coordinates, the labels land in the wrong place (QuPath exports level 0's)"]


def dropped_note(slide_name: str, path: Path, unknown: dict[str, int], no_area: int) -> list[str]:
    """One line naming what of a slide's GeoJSON gives no labels: the classes --unknown-classes ignore dropped
    (their pixels are the ignore index) and the point or line objects skipped for having no area."""
    parts = []
    if unknown:
        classes = ", ".join(f"{name!r} ({n} polygon{'s' * (n > 1)})" for name, n in sorted(unknown.items()))
        parts.append(f"classes not in the class map ignored: {classes}")
    if no_area:
        parts.append(f"{no_area} point or line object{'s' * (no_area > 1)} without an area skipped")
    return [f"{slide_name}: {path.name}: {'; '.join(parts)}"] if parts else []


class PolygonLabels:
    """Labels of one slide from its GeoJSON: checked against the slide's size and the class map."""

    def __init__(self, path: Path, class_map: ClassMap, slide_size: tuple[int, int], slide_name: str = "the slide",
                 level_sizes: tuple[tuple[int, int], ...] = ()):
        self.path, self.class_map = Path(path), class_map
        shapes, self.no_area = read_geojson(self.path)
        if not shapes:  # an empty export would give a store "0.0 % annotated" and a head with nothing to learn
            points = f" ({self.no_area} point or line object(s) without an area)" if self.no_area else ""
            raise InputError(f"{self.path}: no annotation with an area for {slide_name}{points}; was the export "
                             "empty? Leave the slide's annotations out to extract it without labels")
        self.notes = _other_level_note(self.path, shapes, level_sizes)
        w0, h0 = slide_size
        for s in shapes:
            x0, y0, x1, y1 = s.geometry.bounds
            t = EDGE_TOLERANCE
            if x0 < -t or y0 < -t or x1 > w0 + t or y1 > h0 + t:
                raise InputError(
                    f"{self.path}: feature {s.index} ({s.class_name}) reaches outside {slide_name} ({w0}x{h0} px at "
                    f"level 0): bounds ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}); was it exported from another slide?")
        unknown: dict[str, int] = {}
        for s in shapes:
            if class_map.id_of(s.class_name) is None:
                unknown[s.class_name] = unknown.get(s.class_name, 0) + 1
        if unknown and class_map.unknown == "refuse":
            what = ", ".join(f"{n} polygon{'s' * (n > 1)} of class {name!r}" for name, n in sorted(unknown.items()))
            raise InputError(f"{self.path}: {what} not in the class map ({', '.join(class_map.names)}); add the "
                             "class to classes.txt or --classes, or pass --unknown-classes ignore")
        self.unknown = unknown
        self.notes += dropped_note(slide_name, self.path, unknown, self.no_area)
        ordered = sorted(shapes, key=lambda s: (s.detection, s.index))  # annotations first, then detections
        self.shapes = [(s.geometry, IGNORE if class_map.id_of(s.class_name) is None else class_map.id_of(s.class_name))
                       for s in ordered]
        self._tree = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tree": None}

    def _candidates(self, box) -> list[int]:
        import shapely

        if self._tree is None:
            self._tree = shapely.STRtree([g for g, _ in self.shapes])
        return sorted(int(i) for i in self._tree.query(box, predicate="intersects"))

    def labels(self, x0: float, y0: float, w0: float, h0: float, out_w: int, out_h: int) -> np.ndarray:
        """(out_h, out_w) uint8 class ids of the level-0 window (x0, y0, w0, h0); IGNORE where unannotated."""
        import shapely
        from rasterio.features import rasterize
        from rasterio.transform import Affine

        hits = self._candidates(shapely.box(x0, y0, x0 + w0, y0 + h0))
        if not hits:
            return np.full((out_h, out_w), IGNORE, np.uint8)
        transform = Affine(w0 / out_w, 0.0, x0, 0.0, h0 / out_h, y0)
        return rasterize([self.shapes[i] for i in hits], out_shape=(out_h, out_w), fill=IGNORE,
                         transform=transform, dtype=np.uint8)

    def annotated_fraction(self, x0: float, y0: float, size0: float) -> float:
        """Share of the square window the class-mapped polygons cover (exact areas, not pixels)."""
        import shapely

        box = shapely.box(x0, y0, x0 + size0, y0 + size0)
        parts = [self.shapes[i][0] for i in self._candidates(box) if self.shapes[i][1] != IGNORE]
        if not parts:
            return 0.0
        return float(shapely.union_all([shapely.intersection(p, box) for p in parts]).area / box.area)

    def describe(self) -> dict:
        return {"annotations": str(self.path), "format": "geojson", "polygons": len(self.shapes),
                "without_area": self.no_area, "unknown_classes_ignored": self.unknown}
