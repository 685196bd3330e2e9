"""How ``evaluate`` and ``predict --store`` read a store's features for a head: composed or decoded.

On a PCA store (``pcaK``, ``pcaK-int8``) decoding a tile is a matrix
product per block (``C^T c + m``), several times slower than reading its
coefficients ``c``.  A built-in head (fcn, rgb-fcn, linear, mlp) starts with a
per-pixel linear map of each block, so it is composed onto the coefficients
once (``coefficients.coefficient_head``) and reads them instead: the same
function of the same stored values, equal to the decoding path up to float32
rounding (tests/train_head/test_read_path.py checks logits within 1e-4 and
equal labels; ``bench/pca_eval.py`` measures the speed).  Every other head
(a plug-in, whose first operation is unknown) and every other store decodes;
a plug-in on a PCA store says so in one line.  The path is recorded
(``feature_path`` in results.json and prediction.json).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pathsegdiff.store import FeatureStore
from pathsegdiff.train_head.coefficients import COMPOSERS, coefficient_head, composes

COMPOSED, DECODED = "composed", "decoded"


@dataclass(frozen=True)
class ReadPath:
    """The head to apply and whether it reads the store's PCA coefficients (``coefficients``) or its features."""

    head: nn.Module
    coefficients: bool
    reason: str

    @property
    def name(self) -> str:
        return COMPOSED if self.coefficients else DECODED

    def record(self) -> dict[str, Any]:
        """What results.json and prediction.json say about it."""
        return {"feature_path": self.name, "feature_path_reason": self.reason}


def read_path(head: nn.Module, store: FeatureStore, compose: bool = True,
              echo: Callable[[str], None] = lambda line: None) -> ReadPath:
    """The path for ``head`` on ``store`` (or on stores read as one, which share its encoding and bases).

    ``compose=False`` forces decoding (what the benchmark and the tests compare against).  A head that
    cannot compose on a PCA store is echoed in one line.
    """
    encoding = store.encoding
    if not encoding.encoding.uses_pca:
        return ReadPath(head, False, f"a {encoding.encoding.name} store holds features, not PCA coefficients")
    if not compose:
        return ReadPath(head, False, "decoding asked for")
    if not composes(head):
        name = getattr(getattr(head, "config", None), "kind", None) or type(head).__qualname__
        reason = (f"the {name} head decodes every tile of this {encoding.encoding.name} store: only the built-in "
                  f"heads ({', '.join(COMPOSERS)}) compose onto PCA coefficients")
        echo(reason)
        return ReadPath(head, False, reason)
    composed = coefficient_head(head, encoding.bases)
    return ReadPath(composed, True, f"the {head.config.kind} head composed onto the {encoding.encoding.name} "
                                    "store's coefficients")
