"""Diffusers model folder loader (in progress)."""

from __future__ import annotations

from pathlib import Path

from pathsegdiff.errors import ModelLoadError


def load_diffusers_folder(path: Path):
    raise ModelLoadError(f"{path}: diffusers folders are not supported yet")
