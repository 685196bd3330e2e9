"""A store's objects as bytes (for tests that compare two stores object by object), and damage to one object."""

from __future__ import annotations

import json
from pathlib import Path


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every object of the store; the root document without its creation time."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".pathsegdiff.lock"):
            rel = p.relative_to(root).as_posix()
            data = p.read_bytes()
            if rel == "zarr.json":
                doc = json.loads(data)
                doc["attributes"]["pathsegdiff"]["provenance"].pop("created")
                data = json.dumps(doc, sort_keys=True).encode()
            out[rel] = data
    return out


def data_bytes(root: Path) -> dict[str, bytes]:
    """Every object but the root document (whose provenance records the command line)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() != "zarr.json" and not p.name.startswith(".")}


def damage(path: Path, how: str) -> None:
    """Damage one stored object: flip a bit, truncate it, delete it, or replace it with garbage."""
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "delete":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"\x00\xff not json \x89PNG")
    else:
        raise ValueError(how)
