"""Precomputed conditioning embeddings, looked up by tile id.

Accepted files (N tiles, D dimensions):

- ``.npy``: either a structured array with fields ``tile_id`` (string) and
  ``embedding`` (float, shape (D,)), or a plain (N, D) float array with a
  sidecar ``<stem>.tile_ids.txt`` beside it holding one tile id per line,
  in row order.
- ``.zarr``: a group with arrays ``tile_id`` (N,) strings and
  ``embedding`` (N, D).
- ``.h5`` / ``.hdf5``: datasets ``tile_id`` (N,) strings and ``embedding``
  (N, D) (needs ``h5py``).

The conditioner's name carries the first 12 hex of the file's sha256 (for a
``.zarr`` directory: over its files' relative paths and bytes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from pathsegdiff.errors import InputError, MissingDependencyError, ModelLoadError
from pathsegdiff.extract.conditioning.base import Conditioner, file_sha256

ID_KEY, EMBEDDING_KEY = "tile_id", "embedding"
SIDECAR_SUFFIX = ".tile_ids.txt"


def _tree_sha256(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _as_ids(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1).tolist()]


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    array = np.load(path, allow_pickle=False)
    if array.dtype.names:
        if ID_KEY not in array.dtype.names or EMBEDDING_KEY not in array.dtype.names:
            raise ModelLoadError(f"{path}: structured array needs fields '{ID_KEY}' and '{EMBEDDING_KEY}', "
                                 f"has {list(array.dtype.names)}")
        return _as_ids(array[ID_KEY]), np.asarray(array[EMBEDDING_KEY])
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        raise ModelLoadError(f"{path}: a plain array needs its tile ids in {sidecar.name} (one per line, row order)")
    return [line for line in sidecar.read_text().splitlines() if line], array


def _read_zarr(path: Path) -> tuple[list[str], np.ndarray]:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        keys = set(group.array_keys())
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot open as a zarr group ({exc})") from exc
    if not {ID_KEY, EMBEDDING_KEY} <= keys:
        raise ModelLoadError(f"{path}: needs arrays '{ID_KEY}' and '{EMBEDDING_KEY}', has {sorted(keys)}")
    return _as_ids(group[ID_KEY][:]), np.asarray(group[EMBEDDING_KEY][:])


def _read_h5(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        import h5py
    except ImportError as exc:
        raise MissingDependencyError("h5py", "conditioning", "reading .h5 embeddings") from exc
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            if not {ID_KEY, EMBEDDING_KEY} <= keys:
                raise ModelLoadError(f"{path}: needs datasets '{ID_KEY}' and '{EMBEDDING_KEY}', has {sorted(keys)}")
            return _as_ids(f[ID_KEY][()]), np.asarray(f[EMBEDDING_KEY][()])
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot open as HDF5 ({exc})") from exc


READERS = {".npy": _read_npy, ".zarr": _read_zarr, ".h5": _read_h5, ".hdf5": _read_h5}


class PrecomputedConditioner(Conditioner):
    """Embeddings read once from a file; ``embed`` looks tiles up by id."""

    def __init__(self, path: Path):
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise ModelLoadError(f"{path}: unsupported embeddings file; expected one of {', '.join(READERS)}")
        if not path.exists():
            raise ModelLoadError(f"{path}: precomputed embeddings file not found")
        ids, embeddings = reader(path)
        if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
            raise ModelLoadError(f"{path}: embeddings must be a 2-D float array, got {embeddings.dtype} {embeddings.shape}")
        if len(ids) != embeddings.shape[0]:
            raise ModelLoadError(f"{path}: {len(ids)} tile ids for {embeddings.shape[0]} embeddings")
        self.index = {tile_id: row for row, tile_id in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ModelLoadError(f"{path}: tile ids are not unique")
        self.path = path
        self.embeddings = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        self.dim = int(embeddings.shape[1])
        self.name = f"precomputed:{_tree_sha256(path) if path.is_dir() else file_sha256(path)}"

    def embed(self, rgb_uint8: torch.Tensor, tile_ids: list[str]) -> torch.Tensor:
        missing = [t for t in tile_ids if t not in self.index]
        if missing:
            raise InputError(f"{self.path}: no embedding for tile id(s) {missing[:5]}"
                             f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
        rows = torch.tensor([self.index[t] for t in tile_ids], dtype=torch.long)
        return self.embeddings[rows].to(rgb_uint8.device)
