"""The ViT foundation-model family: the seeded ``tiny-vit`` and transformers DINOv2-layout model folders.

A folder is what transformers' ``save_pretrained`` writes: ``config.json``
whose ``model_type`` is ``dinov2`` or ``dinov2_with_registers``, and
``model.safetensors`` (or its sharded index).  DINOv2, UNI and UNI-2h
checkpoints converted to that layout load this way.  An optional
``preprocessor_config.json`` gives the pixel mean and std; ImageNet's
otherwise (DINOv2 and UNI use it).  Only safetensors are read, so no pickle
is ever run, and nothing is fetched.

Its features go into the same store format as a diffusion model's, so the
same heads, reports and ``predict`` compare the two.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pathsegdiff.errors import MissingDependencyError, ModelLoadError
from pathsegdiff.extract.backbones.base import Family
from pathsegdiff.extract.backbones.seeding import seed_module
from pathsegdiff.extract.backbones.vit_backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FoundationViT,
)

MODEL_CLASSES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
UNUSED_AT_INFERENCE = {"embeddings.mask_token"}  # masked-image pretraining only; conversions may drop it

TINY_VIT_ID = "tiny-vit-v1"  # bump when the config or the weight recipe changes
TINY_VIT_SEED = 20240602
# UNI's layout (patch 16, position table for 224 px: 14 x 14, no registers) at 1/16 of its width, so a
# 256 px tile takes milliseconds and every tile size but 224 goes through the position resampling.
TINY_VIT_CONFIG = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2, "mlp_ratio": 4,
                   "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6}


def transformers_class(name: str):
    """A class of transformers, imported only when a ViT is built (the import takes seconds)."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "conditioning", "the ViT foundation-model family") from exc
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ModelLoadError(f"transformers {transformers.__version__} has no {name}: upgrade transformers")
    return cls


def build_tiny_vit() -> FoundationViT:
    """The seeded tiny ViT on the CPU in float32."""
    config = transformers_class("Dinov2Config")(**TINY_VIT_CONFIG)
    with torch.device("cpu"):
        model = transformers_class("Dinov2Model")(config).to(torch.float32)
    seed_module(TINY_VIT_SEED, "vit", model)
    return FoundationViT(model_id=TINY_VIT_ID, model=model, untrained=True)  # extract warns of the seeded weights


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def is_vit_folder(path: Path) -> bool:
    """``config.json`` names a DINOv2-layout model (read as text: recognising imports nothing)."""
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") in MODEL_CLASSES
    except (OSError, ValueError, AttributeError):
        return False


def pixel_normalisation(root: Path) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, note) from ``preprocessor_config.json``; ImageNet's when there is none.

    Only the normalisation is taken: its resize and crop are not applied,
    tiles go in at their own size.
    """
    path = root / "preprocessor_config.json"
    if not path.is_file():
        return IMAGENET_MEAN, IMAGENET_STD, "no preprocessor_config.json: ImageNet mean/std"
    config = read_json(path)
    if config.get("do_normalize", True) is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), f"{path.name} says do_normalize false: pixels in [0, 1]"
    try:
        mean = tuple(float(v) for v in config.get("image_mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in config.get("image_std", IMAGENET_STD))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: image_mean and image_std must be lists of 3 numbers ({exc})") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelLoadError(f"{path}: image_mean and image_std must be 3 numbers each, std > 0; got {mean}, {std}")
    return mean, std, f"mean/std from {path.name}"


def load_vit_folder(root: Path) -> FoundationViT:
    config_path = root / "config.json"
    model_type = read_json(config_path).get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ModelLoadError(f"{config_path}: model_type {model_type!r} is not a DINOv2-layout ViT "
                             f"(expected {' or '.join(MODEL_CLASSES)})")
    weights = next((root / name for name in WEIGHTS_FILES if (root / name).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"{root / WEIGHTS_FILES[0]}: not found (a ViT folder holds config.json and "
                             "model.safetensors, as save_pretrained writes them; pickled .bin/.pth weights are "
                             "not loaded: re-save them with save_pretrained)")
    mean, std, note = pixel_normalisation(root)
    model_cls = transformers_class(MODEL_CLASSES[model_type])
    try:
        model, info = model_cls.from_pretrained(str(root), local_files_only=True, use_safetensors=True,
                                                output_loading_info=True)
    except Exception as exc:  # transformers raises OSError/ValueError/RuntimeError variants
        raise ModelLoadError(f"{weights}: cannot load {model_cls.__name__} ({exc})") from exc
    # transformers fills missing tensors with random values and only warns: that would be noise, not features
    missing = sorted(set(info.get("missing_keys") or ()) - UNUSED_AT_INFERENCE)
    if missing:
        raise ModelLoadError(f"{weights}: {len(missing)} tensor(s) of the model are not in the checkpoint "
                             f"(e.g. {', '.join(missing[:3])}); it does not match {config_path.name}")
    notes = (note,)
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        ignored = f"{len(unexpected)} checkpoint tensor(s) the model does not use were ignored: {unexpected[:3]}"
        notes += (ignored,)
    return FoundationViT(model_id=f"vit:{root.name}", model=model.to(torch.float32), pixel_mean=mean,
                         pixel_std=std, notes=notes)


FAMILY = Family(
    "vit",
    builtin={"tiny-vit": build_tiny_vit},
    recognises=is_vit_folder,
    load=load_vit_folder,
    layout="config.json (model_type dinov2 or dinov2_with_registers) + model.safetensors "
           "(a transformers ViT folder, e.g. DINOv2 or UNI)",
)
