"""What a run trains on, said before it starts: a store still being written, empty splits, labels.

A store whose extraction is still running (or was interrupted) holds only
some of its tiles.  Training on it is allowed, but it is said on the console
and recorded in results.json and summary.md (written / total tiles), and a
split the run evaluates on whose tiles are all missing is refused unless
``allow_partial``: its mIoU would otherwise come from another split, or be
n/a.  A run whose training tiles hold no labelled pixel is refused: the
head would have nothing to learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pathsegdiff.errors import InputError
from pathsegdiff.train_head.data import pixel_counts
from pathsegdiff.train_head.splits import Splits
from pathsegdiff.train_head.store_set import StoreSet


def store_state(store: StoreSet, splits: Splits, allow_partial: bool, echo: Callable[[str], None]) -> dict:
    """``{"written": W, "total": T}`` of the stores' tiles; refuses an evaluated split with no written tile."""
    total, written = int(store.n_tiles), int(len(store.written()))
    declared = np.asarray(store.full_table()["split"]).astype(str)
    state = {"written": written, "total": total}
    if written == total:
        return state
    echo(f"warning: {store.location}: {written} of {total} tiles written (the extraction is still running or was "
         "interrupted); this run trains and evaluates on the written ones only")
    for name in ("test", "val"):
        if (declared == name).any() and not len(splits.get(name)) and not allow_partial:
            raise InputError(f"{store.location}: none of its {int((declared == name).sum())} {name} tiles is written "
                             f"yet ({written} of {total} tiles); finish the extraction (rerun it to resume) or pass "
                             "--allow-partial to evaluate on what is there")
    return state


def require_labelled_pixels(wheres, train_idx, n_classes: int, ignore_index: int, where: str) -> None:
    if not pixel_counts(wheres, train_idx, n_classes, ignore_index).sum():
        raise InputError(f"{where}: none of the {len(train_idx)} training tiles holds a labelled pixel (every pixel "
                         "is the ignore label): check the annotations (an empty export, another pyramid level's "
                         "coordinates, classes all ignored)")
