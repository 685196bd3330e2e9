"""The one registry of built-in heads: ``--head NAME`` -> the class that implements it.

Anything else ``--head`` takes is a plug-in's class path (``path/to/heads.py:Class``
or ``package.module:Class``, :mod:`plugins`); a built-in name is a registered
name for the same mechanism: a class, its keyword options, recorded by the run.
"""

from __future__ import annotations

from pathsegdiff.train_head.heads.base import SegHead
from pathsegdiff.train_head.heads.fcn import FCNHead, RGBFCNHead
from pathsegdiff.train_head.heads.linear import LinearHead
from pathsegdiff.train_head.heads.mlp import PixelMLPEnsemble

BUILTIN: dict[str, type[SegHead]] = {
    "fcn": FCNHead,
    "linear": LinearHead,
    "mlp": PixelMLPEnsemble,
    "rgb-fcn": RGBFCNHead,
}
HEAD_KINDS = tuple(BUILTIN)


def is_class_path(kind: str) -> bool:
    """``file.py:Class`` or ``package.module:Class`` (a built-in name has no colon)."""
    return ":" in kind


def describe_kinds() -> str:
    return f"{', '.join(HEAD_KINDS)}, or a plug-in as path/to/heads.py:Class or package.module:Class"
