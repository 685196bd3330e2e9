"""Reading a model folder's JSON files with errors that name the file and the layout expected."""

from __future__ import annotations

import json
from pathlib import Path

from pathsegdiff.errors import ModelLoadError


def read_model_json(path: Path, layout: str) -> dict:
    """``path`` parsed; ``layout`` says what the folder should hold (e.g. "unet/, vae/ and scheduler/")."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: not found (a {layout})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
