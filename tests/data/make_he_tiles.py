"""Rebuild tests/data/he_tiles/ from the two real H&E images beside this script.

Crops of 128x96 px (width x height) from ``target_image.png`` (tiatoolbox) and
``histo.jpg`` (stardist), with a rough nuclei mask (dark pixels after a small
blur) so that the folder also exercises the mask path.  The masks are a
threshold, not an annotation: use them to test plumbing, never accuracy.

    python tests/data/make_he_tiles.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

HERE = Path(__file__).parent
CROPS = {
    "target_image.png": [(0, 0), (400, 300), (700, 600), (150, 800)],
    "histo.jpg": [(50, 50), (300, 150)],
}
W, H = 128, 96


def main() -> None:
    out = HERE / "he_tiles"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    (out / "classes.txt").write_text("background\nnuclei\n")
    for name, corners in CROPS.items():
        src = Image.open(HERE / name).convert("RGB")
        for x, y in corners:
            crop = src.crop((x, y, x + W, y + H))
            stem = f"{Path(name).stem}_x{x}_y{y}"
            crop.save(out / "images" / f"{stem}.png", optimize=True)
            gray = np.asarray(crop.convert("L").filter(ImageFilter.GaussianBlur(1.5)))
            Image.fromarray((gray < 110).astype(np.uint8)).save(out / "masks" / f"{stem}.png")


if __name__ == "__main__":
    main()
