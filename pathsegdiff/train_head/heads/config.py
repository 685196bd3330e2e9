"""``HeadConfig``: what rebuilds a head, saved in its checkpoint (``head.json``).

The spec fields (blocks with their stored shapes, timesteps, classes, label
size) come from the store; ``kind`` is a built-in name or a plug-in's class
path.  A built-in's options are fields of this config (``--head-args
'{"proj_channels": 32}'`` sets them); a plug-in's keyword arguments are
``args`` (JSON values), passed to its constructor as ``Class(spec, **args)``.
A checkpoint written before plug-ins (no ``args``, no rgb-fcn fields) reads as
the same built-in head.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pathsegdiff.errors import ConfigError
from pathsegdiff.store.schema import BlockSpec
from pathsegdiff.train_head.heads.protocol import HeadSpec
from pathsegdiff.train_head.heads.registry import BUILTIN, describe_kinds, is_class_path

SPEC_FIELDS = ("blocks", "timesteps", "n_classes", "out_size")


@dataclass(frozen=True)
class HeadConfig:
    """What a head needs to be rebuilt: its kind, its inputs, its classes and its options."""

    kind: str  # a built-in name (registry.BUILTIN) or a plug-in's class path
    blocks: tuple[BlockSpec, ...]  # selected blocks with their stored (C, h, w)
    timesteps: tuple[int, ...]
    n_classes: int
    out_size: int  # label resolution (the tile size)
    proj_channels: int = 64  # fcn, rgb-fcn: per-block 1x1 projection width
    hidden_channels: int = 128  # fcn, rgb-fcn: width of the 3x3 conv layers
    conv_layers: int = 2  # fcn, rgb-fcn: number of 3x3 conv layers at the finest block's size
    mlp_hidden: tuple[int, ...] = (256, 128)  # mlp: hidden widths (DDPM-seg uses 256, 128)
    ensemble: int = 10  # mlp: members voting per pixel (DDPM-seg uses 10)
    pixels_per_tile: int = 2048  # mlp: labelled pixels sampled per tile per step (bounds memory)
    rgb_channels: int = 16  # rgb-fcn: width of the full-resolution layers that see the RGB
    rgb_layers: int = 2  # rgb-fcn: 3x3 conv layers at full resolution
    args: Mapping[str, Any] = field(default_factory=dict)  # a plug-in's constructor keyword arguments

    def __post_init__(self) -> None:
        if not is_class_path(self.kind) and self.kind not in BUILTIN:
            raise ConfigError(f"unknown head {self.kind!r}; choose one of {describe_kinds()}")
        if self.builtin and self.args:
            raise ConfigError(f"the {self.kind} head takes options {sorted(builtin_options())}, "
                              f"not {sorted(self.args)}")
        try:
            json.dumps(dict(self.args))
        except (TypeError, ValueError):
            raise ConfigError(f"head arguments must be JSON values: {self.args!r}") from None
        if not self.blocks or not self.timesteps:
            raise ConfigError("a head needs at least one block and one timestep")
        if self.n_classes < 2:
            raise ConfigError(f"a head needs at least 2 classes, got {self.n_classes}")
        for name in ("out_size", "proj_channels", "hidden_channels", "ensemble", "pixels_per_tile", "rgb_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"head option {name} must be >= 1, got {getattr(self, name)}")
        if self.conv_layers < 0 or self.rgb_layers < 0 or any(h < 1 for h in self.mlp_hidden):
            raise ConfigError("conv_layers and rgb_layers must be >= 0 and mlp_hidden widths >= 1")

    @classmethod
    def for_run(cls, kind: str, spec: HeadSpec, options: Mapping[str, Any]) -> HeadConfig:
        """A built-in's ``options`` as its fields, a plug-in's as its ``args``."""
        base = {"kind": kind, **{k: getattr(spec, k) for k in SPEC_FIELDS}}
        if is_class_path(kind):
            return cls(**base, args=dict(options))
        bad = set(options) - builtin_options()
        if bad:
            raise ConfigError(f"unknown options {sorted(bad)} for the {kind} head; it takes "
                              f"{', '.join(sorted(builtin_options()))}")
        return cls(**base, **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    @property
    def builtin(self) -> bool:
        return not is_class_path(self.kind)

    @property
    def spec(self) -> HeadSpec:
        return HeadSpec(self.blocks, self.timesteps, self.n_classes, self.out_size)

    @property
    def in_channels(self) -> dict[str, int]:
        """Channels each block contributes once its timesteps are stacked."""
        return self.spec.in_channels

    @property
    def common_size(self) -> int:
        """The resolution the FCN fuses blocks at: the finest selected block."""
        return max(max(b.height, b.width) for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, **self.spec.to_dict()}
        if not self.builtin:
            return {**d, "args": dict(self.args)}
        return {**d, **{k: getattr(self, k) for k in builtin_options()}, "mlp_hidden": list(self.mlp_hidden)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadConfig:
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown head-config fields {sorted(unknown)}")
        d["blocks"] = tuple(BlockSpec(**b) for b in d["blocks"])
        d["timesteps"] = tuple(int(t) for t in d["timesteps"])
        d["mlp_hidden"] = tuple(int(h) for h in d.get("mlp_hidden", (256, 128)))
        d["args"] = dict(d.get("args") or {})
        return cls(**d)


def builtin_options() -> set[str]:
    """The fields a built-in head's options may set (``--head-args``)."""
    return {f.name for f in fields(HeadConfig)} - {"kind", "args", *SPEC_FIELDS}


def parse_head_args(value: str | None) -> dict[str, Any]:
    """``--head-args``: a JSON object, or the path of a file holding one; None or empty gives {}."""
    if value is None or not value.strip():
        return {}
    text, what = value, "--head-args"
    if not value.lstrip().startswith("{") and Path(value).is_file():
        text, what = Path(value).read_text(), f"--head-args {value}"
    try:
        args = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{what}: not JSON ({e}); give an object such as '{{\"width\": 64}}' or a .json file") \
            from None
    if not isinstance(args, dict):
        raise ConfigError(f"{what}: a JSON object of keyword arguments is needed, got a {type(args).__name__}")
    return args
