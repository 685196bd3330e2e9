"""Which of the tiles ``predict`` plans a store holds, and why the others are missing.

``predict SLIDE --store S`` never predicts part of a slide without saying
so: every planned tile is found in the store by its tile id (written tiles
of the same resolution), and the tiles it lacks are either computed with the
model or named in a refusal with the reason: the store's grid is another one
(stride, overlap or mpp), the store kept fewer tiles (its ``--min-tissue``),
or the store has not written them yet.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from pathsegdiff.store import FeatureStore
from pathsegdiff.store.schema import STATUS_WRITTEN

_POSITION = re.compile(r"_(\d+)_(\d+)$")


@dataclass
class Coverage:
    """``stored``: planned tile id -> store index; ``missing``: planned tiles the store lacks, with reasons."""

    stored: dict[str, int]
    missing: list = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def line(self, n_planned: int) -> str:
        return (f"{len(self.stored)} of the {n_planned} tiles predict needs are in the store, {len(self.missing)} "
                f"missing ({'; '.join(self.reasons)})")


def _position(tile_id: str) -> tuple[int, int] | None:
    m = _POSITION.search(tile_id)
    return (int(m.group(1)), int(m.group(2))) if m else None


def match_store(fs: FeatureStore, plan: list, slide_id: str, mpp: float, tile: int, stride: int) -> Coverage:
    """The planned tiles the store holds, and the reasons for the others (see the module docstring)."""
    table = fs.table()
    rows = np.flatnonzero(np.asarray(table["slide_id"]).astype(str) == slide_id)
    ids = np.asarray(table["tile_id"]).astype(str)
    written = {ids[i]: int(i) for i in rows if table["status"][i] == STATUS_WRITTEN}
    mpps = np.asarray(table["mpp"][rows], dtype=np.float64)
    store_mpp = float(np.median(mpps[np.isfinite(mpps)])) if np.isfinite(mpps).any() else float("nan")  # images: none
    same_mpp = not (mpp == mpp and store_mpp == store_mpp) or math.isclose(store_mpp, mpp, rel_tol=0.01)
    cov = Coverage({t.tile_id: written[t.tile_id] for t in plan if t.tile_id in written and same_mpp})
    cov.missing = [t for t in plan if t.tile_id not in cov.stored]
    if not cov.missing:
        return cov
    if not len(rows):
        cov.reasons.append(f"the store holds no tile of slide {slide_id!r}")
        return cov
    if not same_mpp:
        cov.reasons.append(f"the store's tiles are at {store_mpp:.4g} um/px, predict analyses at {mpp:.4g} (--mpp)")
        return cov
    known = set(ids[rows])
    xs, ys = set(table["x"][rows].tolist()), set(table["y"][rows].tolist())
    store_stride = fs.provenance.get("source", {}).get("stride")
    same_grid = store_stride == stride  # the same slide, footprint and step give the same positions
    unwritten = off_grid = thin = 0
    for t in cov.missing:
        pos = _position(t.tile_id)
        if t.tile_id in known:
            unwritten += 1
        elif not same_grid and (pos is None or pos[0] not in xs or pos[1] not in ys):
            off_grid += 1
        else:
            thin += 1
    if off_grid:
        hint = (f"the store's tiles are every {store_stride} px, predict's every {stride} px; "
                f"--overlap {tile - store_stride} uses the store's grid") if store_stride and store_stride != stride \
            else "another tile grid"
        cov.reasons.append(f"{off_grid} lie off the store's grid ({hint})")
    if thin:
        kept = fs.provenance.get("source", {}).get("min_tissue")
        cov.reasons.append(f"{thin} have less tissue than the extraction kept"
                           + (f" (--min-tissue {kept})" if kept is not None else ""))
    if unwritten:
        cov.reasons.append(f"{unwritten} are not written yet (status todo or failed: resume the extraction)")
    return cov
