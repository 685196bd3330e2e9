"""The sweep's grid: heads x block sets x timestep sets x label fractions, one cell per combination.

A block set is written ``up1+up2`` (several sets: ``up1,up2,up1+up2``), a
timestep set ``50+150``; a label fraction is a fraction, a percentage or a
tile count, as ``train --label-fraction`` takes it.  Every cell is a
:class:`TrainConfig`: the sweep's shared train options with the cell's head,
blocks, timesteps and label fraction, trained ``runs`` times (seeds seed ..
seed + runs - 1).  A cell's label subset is fixed by ``data_seed`` (as in
``train``), so the spread over runs is that of the seeds, unless
``label_draws="per-run"``: then run r draws its own subset (``data_seed + r``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.fit import TrainConfig
from pathsegdiff.train_head.splits import parse_label_fraction

# A label fraction that leaves fewer train tiles than this is refused: with one or two tiles every run of a cell
# trains on the same one or two, and the table would report their noise as an effect of the fraction.
MIN_TRAIN_TILES = 4

Fraction = float | int  # a fraction in (0, 1] or a tile count > 1


def _items(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not value.strip() or not all(items):
        raise ConfigError(f"{what} {value!r}: give a comma-separated list without empty items")
    if len(set(items)) != len(items):
        raise ConfigError(f"{what} {value!r}: an item is repeated")
    return items


def parse_heads(value: str) -> tuple[str, ...]:
    """``fcn,linear`` (a plug-in head is its class path, as ``train --head`` takes it)."""
    return tuple(_items(value, "--heads"))


def parse_sets(value: str | None, what: str, cast=str) -> tuple[tuple | None, ...]:
    """``up1,up2,up1+up2`` -> (('up1',), ('up2',), ('up1', 'up2')); None -> (None,): everything the store has."""
    if value is None or not value.strip():
        return (None,)
    sets = []
    for item in _items(value, what):
        parts = [p.strip() for p in item.split("+")]
        try:
            members = tuple(cast(p) for p in parts if p)
        except ValueError:
            raise ConfigError(f"{what} {value!r}: cannot read {item!r}") from None
        if len(members) != len(parts) or len(set(members)) != len(members):
            raise ConfigError(f"{what} {value!r}: {item!r} has an empty or repeated member")
        sets.append(members)
    if len({frozenset(s) for s in sets}) != len(sets):
        raise ConfigError(f"{what} {value!r}: the same set is given twice")
    return tuple(sets)


def parse_fractions(value: str) -> tuple[Fraction, ...]:
    """``10%,25%,100%`` or tile counts ``10,25`` (each as ``train --label-fraction`` reads it)."""
    fractions = tuple(parse_label_fraction(v) for v in _items(value, "--label-fraction"))
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"--label-fraction {value!r}: two items give the same fraction")
    return fractions


def fraction_text(f: Fraction) -> str:
    """``10%`` for a fraction, ``25 tiles`` for a count."""
    return f"{f} tiles" if isinstance(f, int) else f"{f * 100:g}%"


def set_text(members: tuple | None) -> str:
    return "all" if members is None else "+".join(map(str, members))


def tiles_kept(fraction: Fraction, n_train: int) -> int:
    """How many train tiles a label fraction keeps (``splits.label_subset``'s rule)."""
    return fraction if isinstance(fraction, int) else math.floor(fraction * n_train + 1e-9)


def check_fractions(fractions: tuple[Fraction, ...], n_train: int, where: str) -> None:
    """Refuse a fraction that keeps fewer than MIN_TRAIN_TILES train tiles, or more than there are."""
    for f in fractions:
        k = tiles_kept(f, n_train)
        if k > n_train:
            raise ConfigError(f"{where}: label fraction {fraction_text(f)} asks for {k} tiles but the train split "
                              f"has only {n_train}")
        if k < MIN_TRAIN_TILES:
            raise ConfigError(f"{where}: label fraction {fraction_text(f)} of {n_train} train tiles leaves {k}, "
                              f"fewer than the {MIN_TRAIN_TILES} a sweep needs (MIN_TRAIN_TILES); use a larger "
                              "fraction or a tile count")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.") or "head"


@dataclass(frozen=True)
class Cell:
    """One combination of the grid."""

    head: str
    blocks: tuple[str, ...] | None  # None: every block of the store
    timesteps: tuple[int, ...] | None  # None: every timestep of the store
    fraction: Fraction

    @property
    def name(self) -> str:
        """The cell's run directory under DIR/cells/, e.g. ``fcn__up1+up2__t50+150__10pct``."""
        frac = f"{self.fraction}tiles" if isinstance(self.fraction, int) else f"{self.fraction * 100:g}pct"
        steps = "t-all" if self.timesteps is None else "t" + set_text(self.timesteps)
        return f"{_slug(self.head)}__{set_text(self.blocks)}__{steps}__{frac}"

    def label(self) -> str:
        return (f"{self.head}, blocks {set_text(self.blocks)}, timesteps {set_text(self.timesteps)}, "
                f"{fraction_text(self.fraction)} labels")


PER_CELL = ("head", "blocks", "timesteps", "label_fraction")  # the TrainConfig fields the grid sets per cell


def shared_options(train: TrainConfig) -> dict[str, Any]:
    """The train options every cell shares, as recorded in sweep.json."""
    return {k: v for k, v in train.to_dict().items() if k not in PER_CELL}


@dataclass(frozen=True)
class SweepConfig:
    """The grid and the train options every cell shares (``train.runs`` runs per cell)."""

    heads: tuple[str, ...] = ("fcn",)
    block_sets: tuple[tuple[str, ...] | None, ...] = (None,)
    timestep_sets: tuple[tuple[int, ...] | None, ...] = (None,)
    label_fractions: tuple[Fraction, ...] = (1.0,)
    train: TrainConfig = TrainConfig(runs=3)

    def __post_init__(self) -> None:
        for name in ("heads", "block_sets", "timestep_sets", "label_fractions"):
            if not getattr(self, name):
                raise ConfigError(f"a sweep needs at least one of {name}")
        if self.train.coefficients:
            raise ConfigError("a sweep trains on features; --coefficients is not one of its options")
        names = [c.name for c in self.cells()]
        if len(set(names)) != len(names):
            raise ConfigError("two heads of the sweep would share a cell directory; give plug-ins distinct names")
        for cell in self.cells():  # an unknown head or head option is refused before any cell trains
            self.cell_config(cell)

    def cells(self) -> list[Cell]:
        """Head-major order: head, then block set, then timestep set, then label fraction."""
        return [Cell(h, b, t, f) for h in self.heads for b in self.block_sets for t in self.timestep_sets
                for f in self.label_fractions]

    def cell_config(self, cell: Cell) -> TrainConfig:
        return replace(self.train, head=cell.head, blocks=cell.blocks, timesteps=cell.timesteps,
                       label_fraction=cell.fraction)

    def to_dict(self) -> dict[str, Any]:
        """What sweep.json records: a rerun resumes only with the same dict."""
        train = shared_options(self.train)
        return {"heads": list(self.heads), "block_sets": [None if b is None else list(b) for b in self.block_sets],
                "timestep_sets": [None if t is None else list(t) for t in self.timestep_sets],
                "label_fractions": list(self.label_fractions), "train": train}
