"""A small pyramidal slide cut from the bundled Aperio slide: the same reader, a fraction of the tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SVS = Path(__file__).parents[1] / "data" / "cmu_small_region.svs"


def write_slide_crop(path: Path, origin: tuple[int, int] = (700, 1200), size: int = 768) -> Path:
    """A two-level pyramidal TIFF of ``size`` px at 0.5 um/px, cut from the tissue of the bundled slide."""
    import tifffile
    import tiffslide

    region = np.asarray(tiffslide.TiffSlide(SVS).read_region(origin, 0, (size, size)))[..., :3]
    with tifffile.TiffWriter(path) as tif:
        kw = {"tile": (256, 256), "resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER"}
        tif.write(region, subifds=1, **kw)
        tif.write(region[::2, ::2], subfiletype=1, **kw)
    return path
