"""Quality-control thumbnails: what a run will extract, per slide, to look at before a long run.

One PNG per slide (``STORE.qc/<slide>.png``): the thumbnail tissue was found
on, the tissue outline (green), the annotations filled in the project's class
colours (the ones every overlay and predict's ``regions.geojson`` use, so a
class has one colour in every picture and in QuPath after a re-import,
whatever colour the exported GeoJSON gave it), and the tile grid (thin boxes:
blue for tiles kept for tissue, orange for tiles holding annotated pixels),
with a legend underneath.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pathsegdiff.colours import class_colour as project_colour  # one rule for every picture
from pathsegdiff.tiles.annotations import IGNORE
from pathsegdiff.tiles.cohort_source import slide_sources
from pathsegdiff.tiles.sources import TileSource
from pathsegdiff.tiles.wsi import SlideSource

TISSUE = (0, 200, 0)
TILE, ANNOTATED_TILE = (40, 60, 220), (255, 140, 0)
ALPHA = 0.45
LEGEND_ROW = 16
QC_MAX_SIDE = 1024


def slide_qc(src: SlideSource, max_side: int = QC_MAX_SIDE) -> Image.Image:
    """The QC picture of one slide (see the module docstring)."""
    slide = src.open_slide()
    w0, h0 = slide.dimensions
    scale = min(1.0, max_side / max(w0, h0))
    w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    img = np.asarray(slide.get_thumbnail((w, h)).convert("RGB").resize((w, h))).astype(np.float32)
    _, tissue = src.thumbnail()  # the mask tiles were chosen on, drawn at this size
    tissue = np.asarray(Image.fromarray(tissue).resize((w, h), Image.Resampling.NEAREST))
    if src.labeller is not None:
        labels = src.labeller.labels(0, 0, w0, h0, w, h)
        for k in np.unique(labels[labels != IGNORE]):
            m = labels == k
            img[m] = (1 - ALPHA) * img[m] + ALPHA * np.asarray(project_colour(int(k)), np.float32)
    img[tissue & ~ndimage.binary_erosion(tissue, iterations=2)] = TISSUE
    pic = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    fp = src.footprint * w / w0
    for r in src.records:
        x, y = r.x * w / w0, r.y * h / h0
        draw.rectangle((x, y, x + fp - 1, y + fp - 1), outline=ANNOTATED_TILE if r.annotated > 0 else TILE)
    return _with_legend(pic, src)


def _with_legend(pic: Image.Image, src: SlideSource) -> Image.Image:
    items = [(TISSUE, "tissue"), (TILE, "tile"), (ANNOTATED_TILE, "annotated tile")]
    items += [(project_colour(k), name) for k, name in enumerate(src.class_names)]
    title = f"{src.path.name}: {len(src.records)} tiles of {src.tile_size} px at {src.tile_mpp:.3g} um/px"
    rows = 1 + len(items)
    out = Image.new("RGB", (max(pic.width, 320), pic.height + rows * LEGEND_ROW + 4), (255, 255, 255))
    out.paste(pic, (0, 0))
    draw = ImageDraw.Draw(out)
    y = pic.height + 2
    draw.text((4, y), title, fill=(0, 0, 0))
    for colour, name in items:
        y += LEGEND_ROW
        draw.rectangle((4, y + 2, 16, y + 12), fill=tuple(colour))
        draw.text((22, y), name, fill=(0, 0, 0))
    return out


def write_qc(source: TileSource, directory: Path, progress: bool = False) -> list[Path]:
    """One QC PNG per slide of ``source`` in ``directory`` (kept where one exists: a slide's tiles never change in
    a store); [] for a source without slides."""
    from tqdm import tqdm

    slides = slide_sources(source)
    if not slides:
        return []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in tqdm(slides, desc="QC thumbnails", unit="slide", disable=not progress, leave=False):
        path = directory / f"{src.path.stem}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            slide_qc(src).save(tmp)
            tmp.replace(path)  # a run killed while drawing leaves no half picture
        paths.append(path)
    return paths
