"""The sweep's folder: what it records, when a rerun resumes it, and which cells are finished.

Layout::

    DIR/.pathsegdiff-output.json   the marker (output_dir.py): this folder is a sweep's
    DIR/sweep.json                 the sweep's options and its stores (a rerun resumes only with the same)
    DIR/cells/<cell>/              one run directory per cell, as 'pathsegdiff train -o' writes it
    DIR/sweep.csv, sweep.md        the table: mean and sd over runs per cell
    DIR/sweep.png                  the plot: mIoU with error bars per cell

A folder is refused when it holds anything a sweep did not write (with or
without ``--overwrite``).  A sweep's folder with the same options is resumed:
a cell whose run.json says ``done`` with this cell's config is skipped, any
other cell is trained (an interrupted one from the start).  Other options are
refused unless ``--overwrite``, which replaces the whole folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathsegdiff.errors import ConfigError, StoreExistsError
from pathsegdiff.output_dir import OutputKind, check_output_dir, replace_output_dir
from pathsegdiff.sweep.grid import shared_options
from pathsegdiff.train_head.checkpoint import RUN_META
from pathsegdiff.train_head.fit import TrainConfig
from pathsegdiff.train_head.report import clean_json

SWEEP_JSON = "sweep.json"
CELLS = "cells"
TABLE_CSV, TABLE_MD, PLOT = "sweep.csv", "sweep.md", "sweep.png"
SWEEP_OUTPUT = OutputKind("sweep", names=frozenset({SWEEP_JSON, SWEEP_JSON + ".tmp", CELLS, TABLE_CSV, TABLE_MD,
                                                    PLOT}), required=frozenset())
VERSION = 1


def sweep_record(options: dict[str, Any], stores: Sequence[str], store_identity: str,
                 cell_names: Sequence[str]) -> dict[str, Any]:
    """sweep.json's content, as JSON reads it back (so that a record compares equal to a re-read one): the
    options, the stores, and the cells' folder names (what a later --overwrite may delete under cells/)."""
    doc = {"version": VERSION, "stores": list(stores), "store_identity": store_identity, **options,
           "cells": list(cell_names)}
    return json.loads(json.dumps(clean_json(doc)))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in set(old) | set(new) if k not in ("train", "cells") and old.get(k) != new.get(k))
    old_t, new_t = old.get("train") or {}, new.get("train") or {}
    keys += sorted(k for k in set(old_t) | set(new_t) if old_t.get(k) != new_t.get(k))
    return keys


def _write_record(out: Path, record: dict[str, Any]) -> None:
    tmp = out / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / SWEEP_JSON)


def _read_record(out: Path) -> dict[str, Any] | None:
    """sweep.json, its train options as TrainConfig reads them now (an option added since reads as its default,
    as train's same-run check does); None when unreadable."""
    try:
        doc = json.loads((out / SWEEP_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        train = clean_json(shared_options(TrainConfig.from_dict(doc.get("train") or {})))
    except (ConfigError, TypeError, AttributeError):
        return doc  # options this version does not know: compared as written, so refused naming them
    return {**doc, "train": json.loads(json.dumps(train))}


def check_sweep_dir(out: str | Path, record: dict[str, Any], overwrite: bool) -> bool:
    """Refuse ``out`` unless it is new, empty, this sweep's own folder (True: resume it) or, with ``overwrite``,
    another sweep's (False: it will be replaced).  Writes nothing."""
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not out.is_dir() or not SWEEP_OUTPUT.owns(out):
        check_output_dir(out, SWEEP_OUTPUT, overwrite)  # raises: a file, or a folder holding foreign files
    old = _read_record(out)
    recorded = (old or {}).get("cells")
    cells, known = out / CELLS, set(recorded if isinstance(recorded, list) else record["cells"])
    foreign = sorted(p.name for p in cells.iterdir() if p.name not in known) if cells.is_dir() else \
        [CELLS] * cells.exists()  # a file named cells
    if foreign:  # a folder of no cell of the recorded sweep: never deleted, even with --overwrite
        raise StoreExistsError(f"{cells}: holds folders that are no cell of the sweep there "
                               f"({', '.join(foreign[:3])}); choose another folder")
    if overwrite or old == record:
        return not overwrite
    if old is None:
        raise StoreExistsError(f"{out}: an earlier sweep's folder without a readable {SWEEP_JSON}; pass --overwrite "
                               "to replace it")
    raise ConfigError(f"{out}: holds a sweep with other options ({', '.join(_differences(old, record))}); rerun with "
                      "the same options to resume it, or pass --overwrite to replace it")


def open_sweep_dir(out: str | Path, record: dict[str, Any], overwrite: bool) -> bool:
    """Check ``out`` (:func:`check_sweep_dir`), make it this sweep's folder, record the options; True when an
    earlier run of the same sweep is resumed."""
    out = Path(out)
    resume = check_sweep_dir(out, record, overwrite)
    if not resume:
        replace_output_dir(out, SWEEP_OUTPUT, overwrite=True)  # checked above: new, empty, or a sweep's to replace
        _write_record(out, record)
    (out / CELLS).mkdir(exist_ok=True)
    return resume


def cell_done(run_dir: Path, config: TrainConfig) -> bool:
    """A cell is finished when its run.json says ``done`` for this config and its results.json reads."""
    try:
        meta = json.loads((run_dir / RUN_META).read_text())
        json.loads((run_dir / "results.json").read_text())
        recorded = TrainConfig.from_dict(meta.get("config") or {})
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return meta.get("status") == "done" and recorded == config
