"""``--conditioning null | hipt:PATH | precomputed:PATH`` -> a :class:`Conditioner` for a backbone."""

from __future__ import annotations

from pathlib import Path

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones.base import Backbone
from pathsegdiff.extract.conditioning.base import Conditioner, NullConditioner

CONDITIONING_KINDS = ("null", "hipt:PATH", "precomputed:PATH")


def _existing_file(path_text: str, what: str) -> Path:
    if not path_text:
        raise ConfigError(f"--conditioning {what}: needs a path, e.g. {what}:/path/to/file")
    path = Path(path_text).expanduser()
    if not path.is_file():
        where = {"hipt": " (vit256_small_dino.pth; the README, 'The real workflow', step 1, says where to get it)"}
        raise ModelLoadError(f"{path}: {what} file not found{where.get(what, '')}")
    return path


def make_conditioner(arg: str, backbone: Backbone, device: str = "cpu") -> Conditioner:
    """``null`` | ``hipt:PATH`` (vit256_small_dino.pth) | ``precomputed:PATH`` (.npy/.zarr/.h5)."""
    kind, _, rest = str(arg).partition(":")
    if kind == "null" and not rest:
        return NullConditioner(backbone.ssl_dim)
    if kind in ("hipt", "precomputed") and backbone.ssl_dim == 0:
        raise ConfigError(
            f"model {backbone.model_id} is not conditioned on an SSL embedding; use --conditioning null"
        )
    if kind == "hipt":
        weights = _existing_file(rest, "hipt")
        from pathsegdiff.extract.conditioning.hipt import HIPTConditioner  # imports transformers: only when asked

        cond: Conditioner = HIPTConditioner(weights, device=device)
    elif kind == "precomputed":
        from pathsegdiff.extract.conditioning.precomputed import PrecomputedConditioner

        if not rest:
            raise ConfigError("--conditioning precomputed: needs a path, e.g. precomputed:/path/to/embeddings.npy")
        cond = PrecomputedConditioner(Path(rest).expanduser())
    else:
        raise ConfigError(f"unknown conditioning {arg!r}; expected one of {', '.join(CONDITIONING_KINDS)}")
    if cond.dim != backbone.ssl_dim:
        raise ConfigError(
            f"{rest}: embeddings have {cond.dim} dimensions, model {backbone.model_id} expects {backbone.ssl_dim}"
        )
    return cond
