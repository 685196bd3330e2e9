"""The LDM spec: one object for "a latent diffusion model to extract from".

An :class:`LDM` bundles the first stage (image -> latent), the UNet, the noise
schedule and the conditioning projection, whatever format it came from.  The
loaders live beside this module (``tiny.py``, ``compvis.py``,
``diffusers_folder.py``); :func:`load_model` picks one from a
:class:`ModelSpec`.  Nothing here touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.compvis import load_compvis
from pathsegdiff.extract.diffusers_folder import load_diffusers_folder
from pathsegdiff.extract.ldm import LDM, SSLProjection
from pathsegdiff.extract.tiny import build_tiny

__all__ = ["LDM", "ModelSpec", "SSLProjection", "load_model"]

TINY = "tiny"


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: ``"tiny"`` or a model directory."""

    source: str

    @property
    def kind(self) -> str:
        """``tiny``, ``compvis`` (Lightning log dir) or ``diffusers`` (model folder)."""
        if self.source == TINY:
            return "tiny"
        path = Path(self.source)
        if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
            return "diffusers"
        return "compvis"

    @classmethod
    def parse(cls, value: str) -> "ModelSpec":
        value = str(value).strip()
        if value == TINY:
            return cls(TINY)
        path = Path(value).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{path}: model directory not found (pass 'tiny' or a model directory)")
        if not path.is_dir():
            raise ModelLoadError(
                f"{path}: expected a model directory (CompVis log dir with configs/ and checkpoints/, "
                "or a diffusers folder with unet/ and vae/), got a file"
            )
        spec = cls(str(path.resolve()))
        if spec.kind == "compvis" and not (path / "configs").is_dir():
            raise ModelLoadError(
                f"{path}: not a recognised model directory: expected configs/*-project.yaml + "
                "checkpoints/last.ckpt (CompVis/Lightning) or model_index.json with unet/ and vae/ (diffusers)"
            )
        return spec


def load_model(spec: str | ModelSpec, device: str = "cpu") -> LDM:
    """Load an LDM from ``"tiny"``, a CompVis log directory or a diffusers folder."""
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.parse(spec)
    if spec.kind == "tiny":
        ldm = build_tiny()
    elif spec.kind == "diffusers":
        ldm = load_diffusers_folder(Path(spec.source))
    else:
        ldm = load_compvis(Path(spec.source))
    return ldm.to(device)
