"""Read a checkpoint's tensors without running code from the file.

``.safetensors`` files are read directly.  Pickled ``.ckpt``/``.pth`` files
are read with ``torch.load(weights_only=True)``.  Lightning checkpoints also
pickle metadata (callbacks, hyper-parameters as omegaconf objects); each such
class on a short allow-list is replaced by an inert stand-in that only stores
its arguments, so none of its code runs and the packages need not be
installed.  A file that needs any other class is refused with its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pathsegdiff.errors import ModelLoadError

# Metadata classes Lightning and its friends pickle beside the weights.
INERT_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "argparse.Namespace",
    "typing.",
    "collections.defaultdict",
    "pathlib.",
    "numpy.",
)


class _Inert:
    """Stand-in for a metadata class: keeps whatever the pickle hands it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = (args, kwargs)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)


def _stand_ins(names: list[str]) -> list[tuple[type, str]]:
    return [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in names]


def _brief(exc: BaseException) -> str:
    """One line of torch's multi-paragraph load errors: the line saying what was refused."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    key = next((ln for ln in lines if ln.startswith(("Unsupported", "Trying to load"))), lines[0] if lines else "")
    return f"{type(exc).__name__}: {key}"[:300]


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # weights_only raises UnpicklingError; old formats raise others
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            raise ModelLoadError(f"{path}: cannot read checkpoint ({_brief(first)})") from first
        if not needed:
            raise ModelLoadError(f"{path}: cannot read checkpoint ({_brief(first)})") from first
        refused = sorted(n for n in needed if not n.startswith(INERT_PREFIXES))
        if refused:
            raise ModelLoadError(
                f"{path}: the checkpoint pickles classes that are not plain weights ({', '.join(refused[:5])}); "
                "refusing to run code from it. Re-save only its weights: "
                "torch.save({'state_dict': ckpt['state_dict']}, 'weights.ckpt') in a trusted environment."
            ) from first
        with torch.serialization.safe_globals(_stand_ins(sorted(needed))):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as second:
                raise ModelLoadError(f"{path}: cannot read checkpoint ({_brief(second)})") from second


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping of a checkpoint (``state_dict`` entry when there is one)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot read safetensors file ({exc})") from exc
    obj = _load_pickle(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError(f"{path}: no state_dict found in the checkpoint")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelLoadError(f"{path}: state_dict entries are not tensors: {not_tensors[:5]}")
    return obj
