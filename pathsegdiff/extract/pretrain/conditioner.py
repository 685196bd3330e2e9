"""The conditioner the UNet stage trains with: the same ``null | hipt: | precomputed:`` as ``extract``.

``extract``'s factory checks a conditioner against a loaded backbone; here
the backbone is being trained, so a stand-in carries its embedding width.
A ``precomputed:`` file sets the width itself (its columns); ``null`` and
``hipt:`` use ``ssl_dim`` (HIPT's CLS is 384-d).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.extract.conditioning import Conditioner, make_conditioner


@dataclass(frozen=True)
class _Width:
    """What ``make_conditioner`` reads of a backbone."""

    ssl_dim: int
    model_id: str = "pretrain"


def embedding_width(arg: str, ssl_dim: int) -> int:
    """The projection's input width for ``--conditioning arg``."""
    kind, _, rest = str(arg).partition(":")
    if kind == "precomputed" and rest:
        from pathsegdiff.extract.conditioning.precomputed import PrecomputedConditioner

        return PrecomputedConditioner(Path(rest).expanduser()).dim
    return ssl_dim


def training_conditioner(arg: str, ssl_dim: int, device: str = "cpu") -> Conditioner:
    return make_conditioner(arg, _Width(ssl_dim), device=device)
