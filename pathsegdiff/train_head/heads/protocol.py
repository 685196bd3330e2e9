"""What every head receives and returns: the protocol a plug-in head implements.

A head is a ``torch.nn.Module``.  It is built once per run as
``HeadClass(spec, **head_args)`` (built-in heads: from their :class:`HeadConfig`)
and called with ONE argument, a :class:`HeadInputs`::

    inputs.features  {timestep: {block: Tensor (B, C, h, w)}}, float32 on the head's device: the run's
                     selected blocks and timesteps, each block at its own stored resolution (never upsampled)
    inputs.size      (H, W): the label resolution, the tile size
    inputs.rgb       Tensor (B, 3, H, W) float32 in [0, 1], the tile's stored RGB, when the head's class sets
                     ``needs_rgb = True`` (and the store has RGB; a store without is refused); else None

and returns class logits, a float Tensor (B, K, H, W) with K = ``spec.n_classes``.
Training applies cross-entropy (or focal loss) to these logits; prediction
takes their argmax.  Two optional methods replace those defaults, as the
pixel-MLP ensemble does: ``training_logits(inputs, labels, ignore_index) ->
(logits, targets)`` and ``predict(inputs) -> class ids (B, H, W)``.

A head that breaks the protocol (returns something that is not a Tensor, or
a Tensor of another shape) is refused in one line that names what it
returned; ``train`` runs one dry forward on a batch before anything is
written, so a broken head costs no training time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from pathsegdiff.errors import ConfigError
from pathsegdiff.store.schema import BlockSpec

Features = Mapping[int, Mapping[str, torch.Tensor]]


class HeadInputs(NamedTuple):
    """The one argument of a head's ``forward`` (eva's ``DecoderInputs(features, image_size, images)``)."""

    features: Features  # {t: {block: (B, C, h, w)}} float32, each block at its own resolution
    size: tuple[int, int]  # (H, W) of the labels and of the logits to return
    rgb: torch.Tensor | None = None  # (B, 3, H, W) float32 in [0, 1], for heads with needs_rgb = True


@dataclass(frozen=True)
class HeadSpec:
    """What the store hands a head: the selected blocks with their stored shapes, timesteps, classes, size.

    A plug-in's constructor receives it as its first argument.
    """

    blocks: tuple[BlockSpec, ...]  # name, channels, height, width of each selected block (as stored)
    timesteps: tuple[int, ...]
    n_classes: int
    out_size: int  # label resolution (the tile size)

    @property
    def in_channels(self) -> dict[str, int]:
        """Channels each block contributes once its timesteps are stacked on the channel axis."""
        return {b.name: b.channels * len(self.timesteps) for b in self.blocks}

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [asdict(b) for b in self.blocks], "timesteps": list(self.timesteps),
                "n_classes": self.n_classes, "out_size": self.out_size}


def needs_rgb(head: nn.Module | type) -> bool:
    """Whether a head (or head class) asks for the tile's RGB."""
    return bool(getattr(head, "needs_rgb", False))


def as_inputs(x: HeadInputs | Features, size: int) -> HeadInputs:
    """``x`` itself, or a bare features mapping (how callers before the protocol called a head) wrapped."""
    if isinstance(x, HeadInputs):
        return x
    if isinstance(x, Mapping):
        return HeadInputs(x, (size, size), None)
    raise ConfigError(f"a head takes HeadInputs (or a {{timestep: {{block: tensor}}}} mapping), got {_what(x)}")


def _what(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} Tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} item{'s' * (len(x) != 1)}"
    return "None" if x is None else f"a {type(x).__module__}.{type(x).__qualname__}"


def head_name(head: nn.Module) -> str:
    return type(head).__qualname__


def check_logits(out: Any, inputs: HeadInputs, n_classes: int, who: str) -> torch.Tensor:
    """``out`` if it is float logits (B, K, H, W) for ``inputs``; else one line naming what it is."""
    batch = next(iter(next(iter(inputs.features.values())).values())).shape[0]
    want = (batch, n_classes, *inputs.size)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"head {who} returned {_what(out)}, not a Tensor of logits {want} "
                          "(batch, classes, label height, label width)")
    if tuple(out.shape) != want or not out.is_floating_point():
        raise ConfigError(f"head {who} returned {_what(out)}; the protocol wants float logits of shape {want} "
                          "(batch, classes, label height, label width)")
    return out


def logits(head: nn.Module, inputs: HeadInputs, n_classes: int) -> torch.Tensor:
    """``head(inputs)``, checked: float logits (B, K, H, W)."""
    return check_logits(head(inputs), inputs, n_classes, head_name(head))


def training_logits(head: nn.Module, inputs: HeadInputs, labels: torch.Tensor, ignore_index: int,
                    n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and targets the loss compares: the head's own ``training_logits``, else the full maps."""
    own = getattr(head, "training_logits", None)
    if callable(own):
        return own(inputs, labels, ignore_index)
    return logits(head, inputs, n_classes), labels


@torch.no_grad()
def predict_classes(head: nn.Module, inputs: HeadInputs, n_classes: int) -> torch.Tensor:
    """Class ids (B, H, W): the head's own ``predict``, else the argmax of its logits."""
    own = getattr(head, "predict", None)
    if callable(own):
        return own(inputs)
    return logits(head, inputs, n_classes).argmax(dim=1)
