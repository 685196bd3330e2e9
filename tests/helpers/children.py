"""Child processes the tests start: ``python -m helpers.NAME``, with the tests folder on ``PYTHONPATH``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """This process's environment with the tests folder first on ``PYTHONPATH`` (so a child imports ``helpers``)."""
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def command(name: str, *args) -> list[str]:
    """The command line that runs ``helpers/NAME.py`` as a module, with ``args``."""
    return [sys.executable, "-m", f"helpers.{name}", *map(str, args)]
