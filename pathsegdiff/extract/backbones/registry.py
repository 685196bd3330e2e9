"""Model families by name: ``--model`` resolves to one of them, and a new family is one line here.

``--model`` is either a built-in id (the seeded ``tiny``, ``tiny-dit`` and
``tiny-vit``, and ``he-tiny``, trained on the bundled H&E slide) or a local
model directory, which the first family that recognises it loads.  Nothing here or in the loaders touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones import compvis, diffusers_unet, dit, he_tiny, tiny, vit
from pathsegdiff.extract.backbones.base import Backbone, Family

FAMILIES: tuple[Family, ...] = (
    tiny.FAMILY,
    he_tiny.FAMILY,
    compvis.FAMILY,
    diffusers_unet.FAMILY,
    dit.FAMILY,
    vit.FAMILY,
)


def builtin_ids() -> list[str]:
    return [name for family in FAMILIES for name in family.builtin]


@dataclass(frozen=True)
class BackboneSpec:
    """What the user asked for (a built-in id or a model directory) and the family that serves it."""

    source: str
    family: str

    @classmethod
    def parse(cls, value: str) -> "BackboneSpec":
        value = str(value).strip()
        for family in FAMILIES:
            if value in family.builtin:
                return cls(value, family.name)
        path = Path(value).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{path}: model directory not found (pass a model directory or one of the "
                                 f"built-in seeded models: {', '.join(builtin_ids())}; README, 'The real workflow', "
                                 "step 1 says where to get the real model)")
        if not path.is_dir():
            raise ModelLoadError(f"{path}: expected a model directory, got a file")
        for family in FAMILIES:
            if family.recognises is not None and family.recognises(path):
                return cls(str(path.resolve()), family.name)
        layouts = "; ".join(f"{f.name}: {f.layout}" for f in FAMILIES if f.layout)
        raise ModelLoadError(f"{path}: not a recognised model directory. Expected one of: {layouts}")


def load_backbone(spec: str | BackboneSpec, device: str = "cpu") -> Backbone:
    """Build a built-in model or load a model directory, on ``device``."""
    if not isinstance(spec, BackboneSpec):
        spec = BackboneSpec.parse(spec)
    family = next(f for f in FAMILIES if f.name == spec.family)
    backbone = family.builtin[spec.source]() if spec.source in family.builtin else family.load(Path(spec.source))
    return backbone.to(device)
