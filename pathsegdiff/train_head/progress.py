"""The progress bars of ``train`` and ``evaluate``: one look for every phase, silent when disabled.

Bars go to stderr and vanish when their phase ends (``leave=False``), so the
command's result line is what stays on the screen.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


def bar(total: int | None, desc: str, enabled: bool, unit: str = "batch", iterable: Iterable | None = None) -> tqdm:
    """A bar of ``total`` steps (over ``iterable`` when given); a silent stand-in when not ``enabled``."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)
