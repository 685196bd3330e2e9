"""The sweep's table: one row per cell, read from the cell's results.json (mean and sd over its runs).

``sweep.csv`` holds the numbers (an empty field where a metric is undefined,
for example the sd of one run); ``sweep.md`` the same as a markdown table
with ``mean ± sd`` and the best mean mIoU in bold.  The sd is results.json's
``std``: the sample standard deviation over the cell's runs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathsegdiff.errors import InputError
from pathsegdiff.sweep.folder import CELLS
from pathsegdiff.sweep.grid import Cell, fraction_text

METRICS = ("miou", "mdice", "pixel_accuracy", "boundary_f1")
METRIC_NAMES = {"miou": "mIoU", "mdice": "mDice", "pixel_accuracy": "pixel accuracy", "boundary_f1": "boundary F1"}
COLUMNS = ("head", "blocks", "timesteps", "label_fraction", "n_train_tiles", "runs", "split", "n_tiles",
           *(f"{m}{s}" for m in METRICS for s in ("", "_sd")), "run_dir")


def cell_row(out: Path, cell: Cell) -> dict[str, Any]:
    """A cell's row, from DIR/cells/<cell>/results.json."""
    path = out / CELLS / cell.name / "results.json"
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the cell's results ({e}); rerun the sweep to train it again") from None
    std = r.get("std") or {}
    row = {"head": cell.head, "blocks": "+".join(r["blocks"]), "timesteps": "+".join(map(str, r["timesteps"])),
           "label_fraction": fraction_text(cell.fraction), "n_train_tiles": r.get("n_train_tiles"),
           "runs": r.get("runs"), "split": r.get("split"), "n_tiles": r.get("n_tiles"),
           "run_dir": f"{CELLS}/{cell.name}"}
    for m in METRICS:
        row[m], row[f"{m}_sd"] = r.get(m), std.get(m)
    return row


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([{k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS} for row in rows])


def _cell(mean: float | None, sd: float | None, bold: bool = False) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")
    return f"**{text}**" if bold else text


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [r for r in rows if r.get("miou") is not None]
    return max(scored, key=lambda r: r["miou"]) if scored else None


def table_markdown(rows: Sequence[dict[str, Any]], heading: Sequence[str] = ()) -> str:
    """The markdown page: ``heading`` lines, then one row per cell."""
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    best = best_row(rows)
    head = ["head", "blocks", "timesteps", "labels", "train tiles", *(METRIC_NAMES[m] for m in metrics)]
    lines = [*heading, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [r["head"], r["blocks"], r["timesteps"], r["label_fraction"], str(r["n_train_tiles"])]
        values += [_cell(r[m], r[f"{m}_sd"], bold=m == "miou" and r is best) for m in metrics]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[dict[str, Any]], path: Path, heading: Sequence[str] = ()) -> None:
    path.write_text(table_markdown(rows, heading))
