"""zarr's private APIs live in one module (store/backend/zarr_compat.py); a zarr upgrade that moves one fails here,
naming what moved, instead of deep inside a run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import zarr

from pathsegdiff.store.backend import zarr_compat

STORE = Path(__file__).resolve().parents[2] / "pathsegdiff" / "store"
PRIVATE = ("zarr.core", "zarr.storage._", "zarr.abc", "_async_array")


def test_every_api_the_store_needs_is_found():
    found = zarr_compat.check()  # raises ZarrMovedError naming what moved and where it was looked for
    print(f"zarr {zarr.__version__}:", "; ".join(found))
    assert len(found) == 4


def test_a_moved_api_is_named_with_the_places_looked_at():
    with pytest.raises(zarr_compat.ZarrMovedError, match=r"moved 'thing' \(looked for zarr\.nowhere\.thing\)"):
        zarr_compat.find_api("'thing'", [("zarr.nowhere", "thing")])


def test_no_other_store_module_reaches_into_zarr_internals():
    """Only zarr_compat.py names zarr.core, private zarr modules or an array's private async face."""
    wrong = []
    for path in STORE.rglob("*.py"):
        if path.name == "zarr_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            wrong += [f"{path.relative_to(STORE)}: {n}" for n in names if n.startswith(PRIVATE)]
    assert not wrong, wrong
