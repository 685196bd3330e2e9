"""Per-tile conditioning embeddings (null, HIPT ViT-S/16, precomputed) behind one interface."""

from pathsegdiff.extract.conditioning.base import Conditioner, NullConditioner, file_sha256
from pathsegdiff.extract.conditioning.factory import CONDITIONING_KINDS, make_conditioner

__all__ = ["CONDITIONING_KINDS", "Conditioner", "NullConditioner", "file_sha256", "make_conditioner"]
