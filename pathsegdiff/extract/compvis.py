"""CompVis/Lightning checkpoint loader (in progress)."""

from __future__ import annotations

from pathlib import Path

from pathsegdiff.errors import ModelLoadError


def load_compvis(path: Path):
    raise ModelLoadError(f"{path}: CompVis checkpoints are not supported yet")
