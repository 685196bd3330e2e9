"""The tiles of a cohort: one :class:`SlideSource` per slide, listed one slide after another.

Every slide is opened, its tissue found and its annotations checked before
any tile is extracted, so a bad slide stops the run before the store is
touched.  With ``skip_errors`` a slide that cannot be used (unreadable file,
no tissue, bad annotations) is named in ``skipped`` and left out instead.
Tile ``i`` of the cohort is tile ``i - offset[k]`` of slide ``k``.
"""

from __future__ import annotations

import bisect

from pathsegdiff.errors import InputError
from pathsegdiff.tiles.annotations import ClassMap
from pathsegdiff.tiles.cohort import CohortEntry
from pathsegdiff.tiles.sources import ReorderedSource, TileSample, TileSource
from pathsegdiff.tiles.wsi import SlideSource


class CohortSource(TileSource):
    """Many slides as one source; ``slides[k]`` holds records ``offsets[k]..offsets[k+1]``."""

    kind = "cohort"

    def __init__(self, entries: list[CohortEntry], tile_size: int = 256, stride: int | None = None,
                 target_mpp: float = 0.5, min_tissue: float = 0.5, class_map: ClassMap | None = None,
                 annotated_only: bool = False, skip_errors: bool = False, root: str = "", progress: bool = False):
        from tqdm import tqdm

        self.tile_size, self.root, self.class_map = tile_size, root, class_map
        self.class_names = class_map.names if class_map else ()
        if any(e.annotations for e in entries) and class_map is None:
            first = next(e for e in entries if e.annotations)
            raise InputError(f"{first.origin}: annotations need class names: add a classes.txt beside "
                             f"{'the manifest' if root.endswith('.csv') else 'the slides'} or pass --classes")
        self.slides: list[SlideSource] = []
        self.entries: list[CohortEntry] = []
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []  # said at the start of a run (a slide folder's files that are not slides)
        self.unannotated: list[str] = []  # left out by annotated_only: no annotations, so no annotated tile
        for e in tqdm(entries, desc="open slides", unit="slide", disable=not progress, leave=False):
            if annotated_only and e.annotations is None:
                self.unannotated.append(str(e.slide))
                continue
            try:
                src = SlideSource(e.slide, tile_size=tile_size, stride=stride, target_mpp=target_mpp, mpp=e.mpp,
                                  min_tissue=min_tissue, split=e.split, patient=e.patient, annotations=e.annotations,
                                  class_map=class_map, annotated_only=annotated_only)
            except InputError as err:
                if not skip_errors:
                    raise
                self.skipped[str(e.slide)] = str(err)
                continue
            self.slides.append(src)
            self.entries.append(e)
            self.notes.extend(src.notes)
        if not self.slides:
            why = f"{len(self.skipped)} skipped" + (f", {len(self.unannotated)} without annotations (--annotated-only)"
                                                    if self.unannotated else "")
            raise InputError(f"{root}: no slide could be used ({why})")
        self.offsets = [0]
        self.records = []
        for s in self.slides:
            self.records.extend(s.records)
            self.offsets.append(len(self.records))

    def slide_of(self, i: int) -> int:
        """Index into ``slides`` of cohort tile ``i``."""
        return bisect.bisect_right(self.offsets, int(i)) - 1

    def load(self, i: int) -> TileSample:
        k = self.slide_of(i)
        return self.slides[k].load(int(i) - self.offsets[k])

    def describe(self) -> dict:
        return {**super().describe(), "root": self.root, "class_names": list(self.class_names),
                "unknown_classes": self.class_map.unknown if self.class_map else None,
                "slides": [{"slide": str(s.path), "patient": s.patient, "split": e.split, "tiles": len(s.records),
                            "annotations": str(e.annotations) if e.annotations else None,
                            "tissue_fraction": round(s.tissue_fraction, 4), "tile_mpp": s.tile_mpp,
                            "level": s.level, **(s.labeller.describe() if s.labeller else {})}
                           for s, e in zip(self.slides, self.entries)],
                "skipped_slides": self.skipped, "unannotated_slides_left_out": self.unannotated, "stride": self.slides[0].stride,
                "min_tissue": self.slides[0].min_tissue}


def slide_sources(source: TileSource) -> list[SlideSource]:
    """The slides of a cohort, or a single slide; [] for other sources."""
    if isinstance(source, ReorderedSource):
        source = source.source
    if isinstance(source, CohortSource):
        return list(source.slides)
    if isinstance(source, SlideSource):
        return [source]
    return []
