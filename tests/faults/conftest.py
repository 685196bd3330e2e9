"""Fault tests reuse the store tests' synthetic stores (``synth``) and ``store_bytes``."""

from __future__ import annotations

import sys
from pathlib import Path

STORE_TESTS = Path(__file__).parents[1] / "store"
if str(STORE_TESTS) not in sys.path:
    sys.path.insert(0, str(STORE_TESTS))
