"""A folder of "generated" tiles with known masks, made from the bundled H&E crops (tests/data/he_tiles).

A stand-in for a generative model's output (Style-Extracting Diffusion, an LDM
sampling from masks): each crop turned upside down and its stain shifted, with
its mask moved the same way, so image and mask still agree.  The tiles are
new pixels (no tile id of he_tiles is reused: their stems start ``gen_``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.he_tiles import TILES


def synthetic_folder(root: Path, n: int = 2) -> Path:
    """``root`` with images/, masks/ and classes.txt of ``n`` generated tiles (he_tiles' first ``n`` crops)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    shutil.copy(TILES / "classes.txt", root / "classes.txt")
    for k, path in enumerate(sorted((TILES / "images").glob("*.png"))[:n]):
        rgb = np.asarray(Image.open(path).convert("RGB"))[::-1].astype(np.int16)
        rgb = np.clip(rgb + np.array([12, -8, 6]) * (k + 1), 0, 255).astype(np.uint8)
        mask = np.asarray(Image.open(TILES / "masks" / path.name))[::-1]
        Image.fromarray(rgb).save(root / "images" / f"gen_{path.name}")
        Image.fromarray(np.ascontiguousarray(mask)).save(root / "masks" / f"gen_{path.name}")
    return root
