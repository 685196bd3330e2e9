"""A cohort: the slides of one extraction, from a CSV manifest or a folder of slides.

Manifest (``.csv``, one row per slide; paths relative to the CSV)::

    slide,annotations,split,patient,mpp
    slides/A1.svs,annotations/A1.geojson,train,P01,
    slides/A2.svs,,test,P02,0.25

``slide`` is required; ``annotations`` (QuPath GeoJSON or a label mask),
``split`` (train, val, test or empty), ``patient`` and ``mpp`` (the slide's
own resolution, when its file does not record it) are optional; other
columns are ignored; column names are read in any case (``Slide``).  A
folder of slides: every slide file directly in it (sorted by name; a plain,
one-level TIFF image counts as a slide too, and every other file is named as
skipped, with why, by :func:`folder_skips`); annotations ``STEM.geojson`` or ``STEM.json`` beside the
slides or in ``annotations/``, or a label mask ``masks/STEM.png|.tif``; a
TCGA barcode names its patient (``TCGA-A1-A0SK-01Z-00-DX1`` -> ``TCGA-A1-A0SK``).

Refused, naming the file and line: a missing slide or annotation file, the
same slide twice (slide ids are file stems, so two files with one stem are
the same slide to the store), an unknown split, and one patient in two
splits (its tiles would leak between them).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import InputError
from pathsegdiff.store.schema import SPLITS

SLIDE_EXTENSIONS = (".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".bif", ".svslide", ".tif", ".tiff")
_TCGA = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})\b", re.IGNORECASE)


@dataclass(frozen=True)
class CohortEntry:
    """One slide of a cohort; ``origin`` says where it was listed (for messages)."""

    slide: Path
    annotations: Path | None = None
    split: str = ""
    patient: str = ""
    mpp: float | None = None
    origin: str = ""

    @property
    def slide_id(self) -> str:
        return self.slide.stem


def is_pyramidal_tiff(path: Path) -> bool:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            return len(tf.series[0].levels) > 1
    except Exception:
        return False


def is_slide_file(path: Path) -> bool:
    """Slide formats by suffix; a .tif/.tiff only when it is pyramidal (else it is an ordinary image)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return is_pyramidal_tiff(path)
    return suffix in SLIDE_EXTENSIONS


def is_tiff_image(path: Path) -> bool:
    """A one-level TIFF holding an RGB(A) image: read as a slide of one level in a slide folder."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            shape = tf.series[0].shape
            return len(shape) == 3 and shape[-1] in (3, 4)
    except Exception:
        return False


def _folder_slide(path: Path) -> str | None:
    """None when ``path`` is a slide of a slide folder, else why it is skipped."""
    if path.name.startswith("."):
        return "a hidden file"
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return None if is_pyramidal_tiff(path) or is_tiff_image(path) else "a TIFF that holds no RGB image"
    if suffix in SLIDE_EXTENSIONS:
        return None
    return f"not a slide format ({', '.join(SLIDE_EXTENSIONS)})"


def folder_skips(root: Path) -> list[str]:
    """The files directly in a slide folder that are not read as slides, each with the reason."""
    return [f"{p.name}: {why}" for p in sorted(Path(root).iterdir())
            if p.is_file() and (why := _folder_slide(p)) is not None and not p.name.startswith(".")
            and p.suffix.lower() not in (".geojson", ".json", ".txt", ".csv")]


def is_slide_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and is_slide_file(p) for p in path.iterdir())


def read_manifest(path: Path) -> list[CohortEntry]:
    """The rows of a CSV manifest, checked (see the module docstring)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's byte-order mark
            rows = list(csv.DictReader(f))
            header = [(h or "").strip().lower() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read the manifest ({e})") from None
    if not rows:
        raise InputError(f"{path}: the manifest lists no slides (a header row with 'slide', then one row per slide)")
    if "slide" not in header:
        raise InputError(f"{path}: the manifest has no 'slide' column (columns: {', '.join(header)})")
    entries = []
    for n, raw in enumerate(rows, start=2):  # line 1 is the header
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str) or v is None}
        where = f"{path} line {n}"
        if not row.get("slide"):
            raise InputError(f"{where}: empty slide")
        slide = (path.parent / row["slide"]).resolve()
        if not slide.is_file():
            raise InputError(f"{where}: slide {row['slide']} not found ({slide})")
        ann = None
        if row.get("annotations"):
            ann = (path.parent / row["annotations"]).resolve()
            if not ann.is_file():
                raise InputError(f"{where}: annotations {row['annotations']} not found ({ann})")
        mpp = None
        if row.get("mpp"):
            try:
                mpp = float(row["mpp"])
            except ValueError:
                mpp = -1.0
            if not mpp > 0:
                raise InputError(f"{where}: mpp {row['mpp']!r} is not a positive number of um/px")
        entries.append(CohortEntry(slide, ann, _split(row.get("split", ""), where), row.get("patient", ""), mpp, where))
    check_entries(entries, path)
    return entries


def _split(value: str, where: str) -> str:
    if value not in SPLITS:
        raise InputError(f"{where}: split {value!r} must be train, val, test or empty")
    return value


def tcga_patient(stem: str) -> str:
    m = _TCGA.match(stem)
    return m.group(1).upper() if m else ""


def slide_folder(root: Path) -> list[CohortEntry]:
    """The slides directly in ``root``, with the annotations found for each (see the module docstring)."""
    root = Path(root)
    slides = sorted(p for p in root.iterdir() if p.is_file() and _folder_slide(p) is None)
    if not slides:
        raise InputError(f"{root}: no slide files ({', '.join(SLIDE_EXTENSIONS)})")
    entries = []
    for s in slides:
        found = [c for d in (root, root / "annotations") for c in (d / f"{s.stem}.geojson", d / f"{s.stem}.json")]
        found += [root / "masks" / f"{s.stem}{e}" for e in (".png", ".tif", ".tiff")]
        ann = next((c for c in found if c.is_file()), None)
        entries.append(CohortEntry(s.resolve(), ann, "", tcga_patient(s.stem), None, str(s)))
    check_entries(entries, root)
    return entries


def check_entries(entries: list[CohortEntry], origin: Path) -> None:
    """Refuse one slide listed twice, and one patient in two splits."""
    seen: dict[str, CohortEntry] = {}
    for e in entries:
        first = seen.get(e.slide_id.casefold())
        if first is not None:
            same = "the same file" if first.slide == e.slide else f"the same slide id {e.slide_id!r}"
            raise InputError(f"{e.origin}: slide {e.slide.name} is listed twice ({same} as {first.origin})")
        seen[e.slide_id.casefold()] = e
    splits: dict[str, CohortEntry] = {}
    for e in entries:
        if not e.patient:
            continue
        first = splits.setdefault(e.patient, e)
        if first.split != e.split:
            raise InputError(
                f"{origin}: patient {e.patient} is in split {first.split or '(none)'!r} ({first.origin}) and "
                f"{e.split or '(none)'!r} ({e.origin}): one patient's tiles must stay in one split")


def read_cohort(path: Path) -> tuple[list[CohortEntry], Path]:
    """Entries of a manifest (``.csv``) or a slide folder, and the folder their classes.txt would be in."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path), path.parent
    return slide_folder(path), path
