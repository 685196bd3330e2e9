"""Sweeps: train a grid of heads x block sets x timestep sets x label fractions, each cell ``runs`` times.

``grid.py`` parses and expands the grid (and refuses a label fraction that
keeps fewer than ``MIN_TRAIN_TILES`` train tiles), ``folder.py`` owns the
output folder (marker, recorded options, resume), ``execute.py`` trains the
cells through ``train_head.run.train`` in one or several processes,
``table.py`` and ``plot.py`` write ``sweep.csv``/``sweep.md`` and
``sweep.png``, and ``run.py`` puts them together (:func:`run_sweep`).
"""

from pathsegdiff.sweep.grid import MIN_TRAIN_TILES, Cell, SweepConfig, parse_fractions, parse_heads, parse_sets
from pathsegdiff.sweep.run import SweepResult, run_sweep

__all__ = ["MIN_TRAIN_TILES", "Cell", "SweepConfig", "SweepResult", "parse_fractions", "parse_heads", "parse_sets",
           "run_sweep"]
