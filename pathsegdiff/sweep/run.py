"""``pathsegdiff sweep``: check the grid against the stores, train the cells not yet finished, write table and plot.

Everything that can be refused is refused before the first cell trains: a
store without labels, a block or timestep it lacks, a label fraction that
keeps fewer than ``MIN_TRAIN_TILES`` train tiles, an unknown head or head
option, a folder that holds anything else (``folder.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathsegdiff.output_dir import require_room, written_or_removed
from pathsegdiff.sweep.execute import CellJob, run_cells, threads_per_job
from pathsegdiff.sweep.folder import CELLS, PLOT, TABLE_CSV, TABLE_MD, cell_done, open_sweep_dir, sweep_record
from pathsegdiff.sweep.grid import SweepConfig, check_fractions
from pathsegdiff.sweep.plot import sweep_plot
from pathsegdiff.sweep.table import best_row, cell_row, write_csv, write_markdown
from pathsegdiff.train_head.progress import bar
from pathsegdiff.train_head.splits import read_splits, require_labels, resolve_selection
from pathsegdiff.train_head.store_set import open_stores


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did and its table's rows (cell order); ``line()`` is the command's last line."""

    where: Path
    rows: tuple[dict[str, Any], ...]
    runs: int
    trained: int
    skipped: int
    seconds: float
    pids: tuple[int, ...] = ()  # the processes that trained cells (this one with jobs=1, workers otherwise)

    @property
    def best(self) -> dict[str, Any] | None:
        return best_row(self.rows)

    def line(self) -> str:
        text = (f"{self.where}: {len(self.rows)} cells x {self.runs} runs ({self.trained} trained, {self.skipped} "
                f"finished earlier) in {self.seconds:.0f} s")
        b = self.best
        if b is not None:
            sd = "" if b["miou_sd"] is None else f" ± {b['miou_sd']:.4f}"
            text += (f"; best mIoU {b['miou']:.4f}{sd}: {b['head']}, blocks {b['blocks']}, timesteps "
                     f"{b['timesteps']}, {b['label_fraction']} labels")
        return text + f"; {TABLE_MD}, {TABLE_CSV}, {PLOT}"


def _check_grid(stores: Sequence[str], config: SweepConfig) -> tuple[list[str], str]:
    """Open the stores and refuse what no cell could train on; their locations and identity."""
    store = open_stores(stores)
    for s in store.stores:
        require_labels(s)
    for blocks in config.block_sets:
        for timesteps in config.timestep_sets:
            resolve_selection(store, blocks, timesteps)
    splits = read_splits(store, config.train.data_seed, config.train.val_fraction)
    check_fractions(config.label_fractions, len(splits.train), str(store.location))
    return list(store.wheres), store.identity


def _heading(config: SweepConfig, wheres: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    t = config.train
    split = rows[0]["split"] if rows else "test"
    return [f"# Sweep over {' + '.join(wheres)}", "",
            f"- {len(rows)} cells, {t.runs} runs each (seeds {t.seed}..{t.seed + t.runs - 1}); "
            f"up to {t.epochs} epochs, batch size {t.batch_size}, lr {t.lr:g}, patience {t.patience}, "
            f"augment {'d4' if t.augment else 'none'}",
            f"- metrics on the {split} split ({rows[0]['n_tiles'] if rows else '?'} tiles): mean ± sample sd over "
            "the runs; the label subset of a cell is the same for every run (data seed "
            f"{t.data_seed}); the best mean mIoU is in bold"]


def run_sweep(
    stores: str | Sequence[str],
    out: str | os.PathLike,
    config: SweepConfig,
    jobs: int = 1,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> SweepResult:
    """Train every cell of ``config`` that ``out`` does not hold finished, in ``jobs`` processes of ``threads``
    torch threads, and write the table and the plot."""
    t0 = time.perf_counter()
    out = Path(out)
    threads = threads_per_job(jobs, threads)
    wheres, identity = _check_grid([stores] if isinstance(stores, (str, os.PathLike)) else list(stores), config)
    cells = config.cells()
    require_room(out, 16 * 2**20, "the sweep")  # each cell's train checks its own room again
    resumed = open_sweep_dir(out, sweep_record(config.to_dict(), wheres, identity, [c.name for c in cells]),
                             overwrite)
    todo = [c for c in cells if not cell_done(out / CELLS / c.name, config.cell_config(c))]
    skipped = len(cells) - len(todo)
    echo(f"sweep: {len(cells)} cells x {config.train.runs} runs"
         + (f"; resuming {out}: {skipped} finished cells skipped" if resumed else "")
         + (f"; training {len(todo)} in {min(jobs, len(todo))} process{'es' * (min(jobs, len(todo)) > 1)} of "
            f"{threads} torch thread{'s' * (threads > 1)}" if todo else "; nothing to train"))
    cell_jobs = [CellJob(c.name, tuple(wheres), str(out / CELLS / c.name), config.cell_config(c)) for c in todo]
    labels, pids = {c.name: c.label() for c in todo}, set()
    cells_bar = bar(len(todo), "sweep", progress and bool(todo), unit="cell")

    def done(summary: dict[str, Any]) -> None:
        miou, sd = summary["miou"], summary["miou_sd"]
        text = "n/a" if miou is None else f"{miou:.4f}" + ("" if sd is None else f" ± {sd:.4f}")
        with cells_bar.external_write_mode():
            echo(f"  {labels[summary['name']]}: mIoU {text} ({summary['seconds']:.0f} s)")
        cells_bar.update(1)
        pids.add(summary["pid"])

    try:
        run_cells(cell_jobs, jobs, threads, done)
    finally:
        cells_bar.close()
    rows = [cell_row(out, c) for c in cells]
    with written_or_removed(out, "the sweep's table and plot", remove=False):
        heading = _heading(config, wheres, rows)
        write_csv(rows, out / TABLE_CSV)
        write_markdown(rows, out / TABLE_MD, heading)
        sweep_plot(rows, out / PLOT, f"{len(cells)} cells, {config.train.runs} runs each, {rows[0]['split']} split")
    return SweepResult(out, tuple(rows), config.train.runs, len(todo), skipped, time.perf_counter() - t0,
                       tuple(sorted(pids)))
