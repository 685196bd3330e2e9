"""Turn a SOURCE argument into a tile source: image folders, BCSS, GlaS, slides.

- Image folder: ``ROOT/images/*`` with optional ``ROOT/masks/*`` matched by
  file stem, or a flat folder of images, or one image file.  Class names come
  from ``ROOT/classes.txt`` (or ``ROOT/classes``; one name per line, the line
  number is the class id) or ``class_names``.  When ``masks/`` exists, every
  image needs its mask.
- BCSS (``dataset="bcss"``): ``ROOT/rgbs_colorNormalized`` (or ``images``)
  and ``ROOT/masks``, files named like
  ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500.png``.  The 22 codes are
  mapped to tumor / stroma / inflammatory / necrosis / other; code 0 (outside
  the ROI) becomes ignore.  Slides from institutions OL, LL, E2, EW, GM and S3
  (TCGA barcode site code) form the test split.  Resampled to ``target_mpp``
  (default 0.5) from the file name's MPP.
- GlaS (``dataset="glas"``): ``train_N.bmp`` / ``train_N_anno.bmp``,
  ``testA_N``, ``testB_N``; anywhere under ROOT.  Labels background / gland,
  gland instance ids kept; ``testA``/``testB`` both go to split ``test`` and
  stay apart through their slide id (the file stem).  Native resolution
  (about 0.62 um/px) unless ``target_mpp`` is given.
- A slide file (.svs, .ndpi, pyramidal .tif, ...): see :mod:`pathsegdiff.tiles.wsi`;
  its annotations with ``annotations``.
- A cohort (``dataset="cohort"``, or auto for a ``.csv`` manifest or a folder
  holding slide files): see :mod:`pathsegdiff.tiles.cohort`.  Class names
  come from ``classes.txt`` beside the manifest (or in the slide folder) or
  ``class_names``.
- ``origin="synthetic"``: an image folder of generated tiles with their masks
  (docs/synthetic.md); its tiles are training tiles only, so a split of val
  or test is refused, and so is any other kind of source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.tiles.annotations import UNKNOWN_POLICIES, ClassMap
from pathsegdiff.tiles.cohort import SLIDE_EXTENSIONS, check_entries, folder_skips, is_slide_folder, read_cohort
from pathsegdiff.tiles.images import IMAGE_EXTENSIONS
from pathsegdiff.tiles.sources import IGNORE, ImageEntry, ImageListSource, TileSource
from pathsegdiff.store.records import ORIGINS, SYNTHETIC_SPLITS
from pathsegdiff.store.schema import SPLITS

DATASETS = ("folder", "bcss", "glas", "slide", "cohort")

BCSS_CLASSES = ("tumor", "stroma", "inflammatory", "necrosis", "other")
BCSS_TEST_SITES = ("OL", "LL", "E2", "EW", "GM", "S3")
_BCSS_GROUPS = {1: 0, 19: 0, 20: 0, 2: 1, 3: 2, 10: 2, 11: 2, 4: 3}  # everything else 1..21 -> other
BCSS_CODE_MAP = (IGNORE, *(_BCSS_GROUPS.get(c, 4) for c in range(1, 22)))  # 0 = outside the ROI
_BCSS_NAME = re.compile(r"^(TCGA-([A-Z0-9]{2})-[A-Z0-9]{4}-\w+?)_xmin(\d+)_ymin(\d+)_MPP-([0-9.]+)$")
_GLAS_NAME = re.compile(r"^(train|testA|testB)_(\d+)$")
GLAS_MPP = 0.62


@dataclass(frozen=True)
class SourceConfig:
    """How to cut a SOURCE into tiles (saved in the store's provenance)."""

    dataset: str = "auto"  # auto: slide file, image file or folder
    tile_size: int = 256
    stride: int | None = None
    target_mpp: float | None = None  # None: native (slides: 0.5)
    mpp: float | None = None  # declare the native resolution when files do not carry it
    class_names: tuple[str, ...] | None = None
    split: str = ""
    min_tissue: float = 0.5  # slides: tissue fraction a tile needs
    annotations: str | None = None  # one slide's GeoJSON or label mask (a cohort lists its own)
    unknown_classes: str = "refuse"  # an annotation class outside class_names: refuse, or ignore its pixels
    annotated_only: bool = False  # slides: only tiles with annotated pixels
    skip_errors: bool = False  # cohorts: leave out (and name) a slide that cannot be used
    progress: bool = False  # cohorts: a bar while the slides are opened
    origin: str = "real"  # synthetic: a folder of generated tiles with known masks, training tiles only

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of train, val, test or empty, got {self.split!r}")
        if self.origin not in ORIGINS:
            raise ConfigError(f"--origin must be real or synthetic, got {self.origin!r}")
        if self.origin == "synthetic" and self.split not in SYNTHETIC_SPLITS:
            raise ConfigError(f"--origin synthetic with --split {self.split}: synthetic tiles are training tiles, "
                              "never validation or test ones; drop --split (or give train)")
        if self.unknown_classes not in UNKNOWN_POLICIES:
            raise ConfigError(f"--unknown-classes must be refuse or ignore, got {self.unknown_classes!r}")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"--min-tissue must be in 0..1, got {self.min_tissue}")


def open_source(path: str | Path, cfg: SourceConfig = SourceConfig()) -> TileSource:
    """Build the tile source for ``path``; every input problem found here names its file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: source not found")
    kind = cfg.dataset
    if kind not in ("auto", *DATASETS):
        raise ConfigError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    if kind == "auto":
        if path.is_file():
            kind = {".csv": "cohort", **dict.fromkeys(SLIDE_EXTENSIONS, "slide")}.get(path.suffix.lower(), "folder")
        else:
            kind = "cohort" if is_slide_folder(path) else "folder"
    if cfg.annotations and kind != "slide":
        raise ConfigError("--annotations is for one slide; a cohort lists its annotations in the manifest "
                          "or beside its slides")
    if kind == "slide" and path.is_dir():
        kind = "cohort"
    if cfg.origin == "synthetic" and kind != "folder":
        raise ConfigError(f"{path}: --origin synthetic reads a folder of generated tiles (images/ + masks/), "
                          f"not a {kind} source")
    if kind == "slide":
        from pathsegdiff.tiles.wsi import SlideSource

        return SlideSource(path, tile_size=cfg.tile_size, stride=cfg.stride, target_mpp=cfg.target_mpp or 0.5,
                           mpp=cfg.mpp, min_tissue=cfg.min_tissue, split=cfg.split, annotations=cfg.annotations,
                           class_map=_class_map(path.parent, cfg) if cfg.annotations else None,
                           annotated_only=cfg.annotated_only)
    if kind == "cohort":
        return cohort(path, cfg)
    if kind == "bcss":
        return bcss(path, cfg)
    if kind == "glas":
        return glas(path, cfg)
    return image_folder(path, cfg)


def _class_map(root: Path, cfg: SourceConfig) -> ClassMap | None:
    names = cfg.class_names or read_class_names(root)
    return ClassMap(tuple(names), cfg.unknown_classes) if names else None


def cohort(path: Path, cfg: SourceConfig) -> TileSource:
    from pathsegdiff.tiles.cohort_source import CohortSource

    entries, base = read_cohort(path)
    if cfg.mpp:  # --source-mpp: for every slide the manifest gives no mpp for
        entries = [e if e.mpp else replace(e, mpp=cfg.mpp) for e in entries]
    if cfg.split:
        entries = [e if e.split else replace(e, split=cfg.split) for e in entries]
        check_entries(entries, path)
    class_map = _class_map(base, cfg) if any(e.annotations for e in entries) or cfg.class_names else None
    source = CohortSource(entries, tile_size=cfg.tile_size, stride=cfg.stride, target_mpp=cfg.target_mpp or 0.5,
                          min_tissue=cfg.min_tissue, class_map=class_map, annotated_only=cfg.annotated_only,
                          skip_errors=cfg.skip_errors, root=str(path), progress=cfg.progress)
    if path.is_dir():  # files of a slide folder that are not slides: said, not silently dropped
        source.notes += [f"{path}: skipped {line}" for line in folder_skips(path)]
    return source


def _images_in(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in out:
                raise InputError(f"{p}: two images share the stem {p.stem!r} ({out[p.stem].name})")
            out[p.stem] = p
    return out


def read_class_names(root: Path) -> tuple[str, ...] | None:
    for name in ("classes.txt", "classes"):
        f = root / name
        if f.is_file():
            names = tuple(line.strip() for line in f.read_text().splitlines() if line.strip())
            if not names:
                raise InputError(f"{f}: empty classes file")
            return names
    return None


def image_folder(root: Path, cfg: SourceConfig) -> ImageListSource:
    if root.is_file():
        if root.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{root}: not an image or slide file ({', '.join(IMAGE_EXTENSIONS)})")
        images, masks, base = {root.stem: root}, None, root.parent
    else:
        base = root
        img_dir = root / "images" if (root / "images").is_dir() else root
        images = _images_in(img_dir)
        masks = _images_in(root / "masks") if (root / "masks").is_dir() else None
        if not images:
            raise InputError(f"{img_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    entries = []
    for stem, img in images.items():
        mask = None
        if masks is not None:
            mask = masks.get(stem)
            if mask is None:
                raise InputError(f"{img}: no mask with stem {stem!r} in {root / 'masks'}")
        entries.append(ImageEntry(img, mask, stem, cfg.split, cfg.mpp or float("nan")))
    if cfg.origin == "synthetic" and masks is None:
        raise InputError(f"{root}: synthetic tiles are training tiles, so they need their masks: put them in "
                         f"{root / 'masks'} (one per image, by file stem)")
    classes = cfg.class_names or (read_class_names(base) if masks is not None else None) or ()
    return ImageListSource(entries, cfg.tile_size, cfg.stride, cfg.target_mpp, tuple(classes),
                           origin=cfg.origin, kind="folder", root=str(root))


def bcss(root: Path, cfg: SourceConfig) -> ImageListSource:
    img_dir = next((root / d for d in ("rgbs_colorNormalized", "images") if (root / d).is_dir()), None)
    if img_dir is None or not (root / "masks").is_dir():
        raise InputError(f"{root}: a BCSS root holds rgbs_colorNormalized/ (or images/) and masks/")
    masks = _images_in(root / "masks")
    entries = []
    for stem, img in _images_in(img_dir).items():
        m = _BCSS_NAME.match(stem)
        if not m:
            raise InputError(f"{img}: not a BCSS file name (TCGA-XX-XXXX-DX1_xmin<N>_ymin<N>_MPP-<mpp>)")
        if stem not in masks:
            raise InputError(f"{img}: no mask with stem {stem!r} in {root / 'masks'}")
        slide, site, x0, y0, mpp = m.group(1), m.group(2), int(m.group(3)), int(m.group(4)), float(m.group(5))
        split = "test" if site in BCSS_TEST_SITES else "train"
        entries.append(ImageEntry(img, masks[stem], slide, split, mpp, (x0, y0)))
    if not entries:
        raise InputError(f"{img_dir}: no images")
    return ImageListSource(entries, cfg.tile_size, cfg.stride, cfg.target_mpp or 0.5, BCSS_CLASSES,
                           code_map=BCSS_CODE_MAP, kind="bcss", root=str(root))


def glas(root: Path, cfg: SourceConfig) -> ImageListSource:
    files = {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS}
    entries = []
    for stem, img in files.items():
        m = _GLAS_NAME.match(stem)
        if not m:
            continue  # annotations and unrelated files
        anno = files.get(f"{stem}_anno")
        if anno is None:
            raise InputError(f"{img}: no annotation {stem}_anno{img.suffix} beside it")
        split = "train" if m.group(1) == "train" else "test"
        entries.append(ImageEntry(img, anno, stem, split, cfg.mpp or GLAS_MPP))
    if not entries:
        raise InputError(f"{root}: no GlaS images (train_N.bmp, testA_N.bmp, testB_N.bmp)")
    entries.sort(key=lambda e: (e.split != "train", e.slide_id.split("_")[0], int(e.slide_id.split("_")[1])))
    return ImageListSource(entries, cfg.tile_size, cfg.stride, cfg.target_mpp, ("background", "gland"),
                           instance_masks=True, kind="glas", root=str(root))
