"""Model families behind one interface (``base.Backbone``) and a registry (``registry.FAMILIES``)."""

from pathsegdiff.extract.backbones.base import Backbone, Family
from pathsegdiff.extract.backbones.registry import (
    FAMILIES,
    BackboneSpec,
    builtin_ids,
    load_backbone,
)

__all__ = ["FAMILIES", "Backbone", "BackboneSpec", "Family", "builtin_ids", "load_backbone"]
