"""``--compile``: a backbone's ``encode`` and partial forward through ``torch.compile``, eager if that fails.

The partial forward (``backbones/unet_blocks.py``) returns after the last
requested block instead of unwinding the UNet with an exception, so dynamo
traces it whole.  Inputs are made channels-last (the weights are left as they
are: the eager path, which promises bit-identical features whatever the batch
size on the CPU, shares them); convolutions then run channels-last, which
oneDNN and cuDNN prefer.  Shapes are static: expect one compilation per
timestep and per batch shape (the last, shorter batch of a run is one more),
each seconds to minutes, paid once per process.

Features differ from eager ones by rounding only: kernels are fused and
reordered.  tests/extract/test_compile.py states the tolerance.

If compiling fails (no C++ compiler for inductor on the CPU, an operator
dynamo cannot trace, ...), one warning line goes to stderr and this and every
later call run eagerly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pathsegdiff.errors import PathsegdiffError


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _one_line(e: BaseException) -> str:
    """``e``, and the error behind it (dynamo wraps a compiler's error in its own), on one line."""
    inner = getattr(e, "inner_exception", None) or e.__cause__
    what = f"{type(e).__name__}: {type(inner).__name__}: {inner}" if inner is not None else f"{type(e).__name__}: {e}"
    return (what.strip().splitlines() or [""])[0][:300]


class CompiledForward:
    """Stands in for a backbone's ``encode`` and ``forward_blocks``; everything else stays the backbone's."""

    def __init__(self, backbone: Any, backend: str | Callable = "inductor"):
        self.backbone = backbone
        self.failed: str | None = None  # why compiling failed, once it has
        self._encode = torch.compile(backbone.encode, backend=backend, dynamic=False)
        self._forward = torch.compile(backbone.forward_blocks, backend=backend, dynamic=False)

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return self._call(self._encode, self.backbone.encode, rgb)

    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._call(self._forward, self.backbone.forward_blocks, x, timestep, context, tuple(blocks))

    def _call(self, compiled: Callable, eager: Callable, x: torch.Tensor, *rest: Any) -> Any:
        if self.failed is None:
            try:
                return compiled(_channels_last(x), *rest)
            except (PathsegdiffError, torch.cuda.OutOfMemoryError):
                raise
            except Exception as e:  # a compiler error: dynamo, inductor, a missing C++ toolchain
                self.failed = _one_line(e)
                print(f"warning: --compile: torch.compile failed ({self.failed}); running eagerly", file=sys.stderr)
        return eager(x, *rest)
