"""``pathsegdiff extract`` of the bundled H&E tiles (tests/data/he_tiles) as the extraction tests run it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pathsegdiff.cli import app

TILES = Path(__file__).parents[1] / "data" / "he_tiles"
ARGS = ["--tile-size", "64", "--stride", "32", "--quiet"]  # 36 tiles from six 128x96 crops


def extract(src, out, *extra) -> tuple[int, str]:
    """``pathsegdiff extract SRC -o OUT`` with :data:`ARGS` and ``extra``: (exit code, output)."""
    r = CliRunner().invoke(app, ["extract", str(src), "-o", str(out), *ARGS, *map(str, extra)])
    return r.exit_code, r.output
