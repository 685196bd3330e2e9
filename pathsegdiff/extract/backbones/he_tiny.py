"""``he-tiny``: the tiny architecture trained by ``pathsegdiff pretrain`` on the bundled CC0 H&E slide.

It is a diffusers folder with ``ssl_projection/`` (the layout ``pretrain``
writes), shipped inside the package (``weights/he_tiny/``, a few MB of
safetensors) and loaded like any such folder, under its own model id.  It was
trained on one small CC0 skin sample on a 2-core CPU, without the tiles the
demo holds out for testing (docs/he-tiny.md is its model card): enough to see
the method work end to end, not a pathology foundation model.
"""

from __future__ import annotations

from pathlib import Path

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.base import Family
from pathsegdiff.extract.backbones.diffusers_unet import load_diffusers_folder
from pathsegdiff.extract.backbones.ldm import LDM

HE_TINY_ID = "he-tiny-v1"  # bump when the shipped weights change
WEIGHTS = Path(__file__).parent / "weights" / "he_tiny"


def build_he_tiny() -> LDM:
    if not (WEIGHTS / "unet" / "config.json").is_file():
        raise ModelLoadError(f"{WEIGHTS}: the he-tiny weights are missing from this installation (reinstall "
                             "pathsegdiff, or use --model tiny)")
    return load_diffusers_folder(WEIGHTS, model_id=HE_TINY_ID)


FAMILY = Family("he-tiny", builtin={"he-tiny": build_he_tiny})
