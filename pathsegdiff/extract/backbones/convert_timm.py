"""Convert a timm-layout ViT checkpoint (UNI, UNI-2h as published) into the transformers folder the ViT family loads.

UNI and UNI-2h ship ``pytorch_model.bin``: the state dict of timm's
``VisionTransformer`` (``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``, ...).
:func:`convert_timm_vit` reads it with ``torch.load(weights_only=True)`` (or a
``.safetensors`` file), renames and reshapes the tensors into the layout
``save_pretrained`` of transformers' ``Dinov2WithRegistersModel`` writes, and
writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``
(ImageNet mean/std, as UNI's transform).  timm is never imported.

Where the two implementations differ, and what the conversion does:

- **Position table.** UNI-2h is built with ``no_embed_class``: its
  ``pos_embed`` has one row per patch and none for the class or register
  tokens, which get no position.  transformers' table always has a class
  row first: it gets zeros, so CLS + 0 is timm's CLS; register tokens are
  inserted after the table is added, as in timm.
- **Position resampling.** timm resamples the table bicubically *with
  antialiasing* for any other input size; transformers' ``Dinov2Model`` does
  it without (different values, upsampling included), its
  ``Dinov2WithRegistersModel`` with.  Every conversion is therefore a
  ``dinov2_with_registers`` model, with 0 registers for UNI.
- **SwiGLU.** timm's ``SwiGLUPacked`` (``GluMlp``, ``gate_last=False``)
  packs ``fc1`` as [gate | value] and computes ``silu(gate) * value``;
  transformers' checkpoint layout ``mlp.weights_in`` is split the same way
  (first half through SiLU), so the halves keep their order
  (:func:`swiglu_weights_in`).
- **SwiGLU width.** timm's hidden width is ``int(dim * mlp_ratio)`` (UNI-2h:
  1536 x 5.33334 -> 8192, so 4096 per half); transformers derives it as
  ``int(int(dim * mlp_ratio) * 2 / 3)`` rounded up to a multiple of 8, which
  from UNI-2h's ratio would give 5464 (and its config takes an integer
  ratio: 5 gives 5120).  The config gets the ratio from which transformers
  derives timm's width (4 for UNI-2h, :func:`swiglu_mlp_ratio`).
- **Registers** (UNI-2h: 8 ``reg_token``) become ``embeddings.register_tokens``.
- **Layer scale** ``ls1.gamma``/``ls2.gamma`` become ``layer_scale1.lambda1``/
  ``layer_scale2.lambda1`` (ones when the checkpoint has none); the fused
  ``qkv`` splits into query, key and value (timm's rows are [q | k | v]).

The written folder is loaded back with the ViT family's loader before the
call returns, so a conversion that does not load is never left behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.checkpoint_io import read_state_dict
from pathsegdiff.extract.backbones.vit import load_vit_folder, transformers_class
from pathsegdiff.extract.backbones.vit_backbone import IMAGENET_MEAN, IMAGENET_STD
from pathsegdiff.output_dir import OutputKind, check_output_dir

WRITTEN = ("config.json", "model.safetensors", "preprocessor_config.json")
CONVERSION = OutputKind("convert timm-vit", names=frozenset(WRITTEN), required=frozenset(WRITTEN))
CHECKPOINT_NAMES = ("pytorch_model.bin", "model.safetensors")
UNUSED = ("head.weight", "head.bias")  # a classifier: not on the path to the patch tokens


@dataclass(frozen=True)
class TimmViTArch:
    """What a timm ViT's state dict does not say: heads, MLP kind, position-table layout, registers."""

    name: str
    num_heads: int
    swiglu: bool  # SwiGLUPacked MLP with SiLU; else fc1 -> GELU -> fc2
    no_embed_class: bool  # pos_embed has no row for the class (and register) tokens
    registers: int
    layer_norm_eps: float = 1e-6


# The published models' timm_kwargs (their model cards): UNI = vit_large_patch16_224, init_values 1e-5;
# UNI-2h = vit_giant_patch14_224 with depth 24, 24 heads, dim 1536, mlp_ratio 5.33334, SwiGLUPacked + SiLU,
# reg_tokens 8, no_embed_class.  Sizes (dim, depth, patch, table, widths) are read from the tensors.
ARCHS = {
    "uni": TimmViTArch("uni", num_heads=16, swiglu=False, no_embed_class=False, registers=0),
    "uni2-h": TimmViTArch("uni2-h", num_heads=24, swiglu=True, no_embed_class=True, registers=8),
}


def parse_arch(arch: str | TimmViTArch) -> TimmViTArch:
    if isinstance(arch, TimmViTArch):
        return arch
    if arch not in ARCHS:
        raise ModelLoadError(f"unknown architecture {arch!r}; choose {' or '.join(ARCHS)}")
    return ARCHS[arch]


def find_checkpoint(path: Path) -> Path:
    """``path`` itself, or the checkpoint inside a downloaded model folder."""
    if path.is_dir():
        found = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
        if found is None:
            raise ModelLoadError(f"{path}: holds no {' or '.join(CHECKPOINT_NAMES)}")
        return found
    return path


def position_table(pos_embed: torch.Tensor, no_embed_class: bool) -> tuple[torch.Tensor, int]:
    """timm's ``pos_embed`` -> transformers' (1, 1 + g*g, C) table with its class row first, and g."""
    rows = pos_embed.shape[1] - (0 if no_embed_class else 1)
    grid = math.isqrt(rows)
    if grid * grid != rows:
        layout = "one row per patch (no_embed_class)" if no_embed_class else "a class row, then one per patch"
        raise ModelLoadError(f"pos_embed has {pos_embed.shape[1]} rows, which is not {layout} on a square grid; "
                             "is --arch right?")
    if not no_embed_class:
        return pos_embed, grid
    return torch.cat([torch.zeros_like(pos_embed[:, :1]), pos_embed], dim=1), grid  # CLS + 0 = timm's CLS


def swiglu_weights_in(fc1: torch.Tensor) -> torch.Tensor:
    """timm's packed ``fc1`` ([gate | value] along dim 0) -> transformers' ``weights_in`` ([gate | value])."""
    gate, value = fc1.chunk(2, dim=0)
    return torch.cat([gate, value], dim=0)


def swiglu_mlp_ratio(dim: int, width: int) -> int:
    """The ``mlp_ratio`` (an integer in transformers' config) from which it derives a SwiGLU width of ``width``."""
    for ratio in range(1, 33):
        if (int(dim * ratio * 2 / 3) + 7) // 8 * 8 == width:
            return ratio
    raise ModelLoadError(f"a SwiGLU width of {width} for dim {dim} cannot be expressed in transformers' Dinov2 "
                         "config (an integer mlp_ratio r gives int(dim * r * 2 / 3) rounded up to a multiple of 8)")


def mlp_ratio(dim: int, width: int) -> int:
    if width % dim:
        raise ModelLoadError(f"an MLP width of {width} for dim {dim} is no whole multiple of it, which "
                             "transformers' Dinov2 config (an integer mlp_ratio) cannot express")
    return width // dim


def convert_state_dict(sd: dict[str, torch.Tensor], arch: TimmViTArch) -> tuple[dict[str, torch.Tensor], dict]:
    """timm tensors -> (transformers checkpoint tensors, Dinov2WithRegistersConfig keyword arguments)."""
    sd = dict(sd)
    take = sd.pop
    try:
        patch_w = take("patch_embed.proj.weight")
        dim, patch = patch_w.shape[0], patch_w.shape[-1]
        table, grid = position_table(take("pos_embed"), arch.no_embed_class)
        out = {"embeddings.patch_embeddings.projection.weight": patch_w,
               "embeddings.patch_embeddings.projection.bias": take("patch_embed.proj.bias"),
               "embeddings.position_embeddings": table, "embeddings.cls_token": take("cls_token"),
               "embeddings.mask_token": torch.zeros(1, dim, dtype=patch_w.dtype),  # unused at inference
               "layernorm.weight": take("norm.weight"), "layernorm.bias": take("norm.bias")}
    except KeyError as exc:
        raise ModelLoadError(f"the checkpoint has no {exc.args[0]}: not a timm VisionTransformer state dict") from None
    reg = sd.pop("reg_token", None)
    registers = 0 if reg is None else reg.shape[1]
    if registers != arch.registers:
        raise ModelLoadError(f"the checkpoint has {registers} register token(s), --arch {arch.name} has "
                             f"{arch.registers}; is --arch right?")
    # a model without registers still has the (1, 0, C) parameter: UNI goes through the registers class for its
    # antialiased position resampling
    out["embeddings.register_tokens"] = torch.zeros(1, 0, dim, dtype=patch_w.dtype) if reg is None else reg
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth < 1 or dim % arch.num_heads:
        raise ModelLoadError(f"{depth} blocks of width {dim} do not fit --arch {arch.name} ({arch.num_heads} heads)")
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        try:
            out.update(block_tensors(sd, src, dst, dim, arch.swiglu, qkv_bias))
        except KeyError as exc:
            raise ModelLoadError(f"the checkpoint has no {exc.args[0]} (block {i} of {depth})") from None
    width = out["encoder.layer.0.mlp.weights_out.weight" if arch.swiglu else "encoder.layer.0.mlp.fc2.weight"].shape[1]
    unknown = sorted(set(sd) - set(UNUSED))
    if unknown:
        raise ModelLoadError(f"{len(unknown)} checkpoint tensor(s) this conversion does not know: {unknown[:5]}; "
                             f"is --arch right?")
    config = {"hidden_size": dim, "num_hidden_layers": depth, "num_attention_heads": arch.num_heads,
              "mlp_ratio": swiglu_mlp_ratio(dim, width) if arch.swiglu else mlp_ratio(dim, width),
              "hidden_act": "silu" if arch.swiglu else "gelu", "use_swiglu_ffn": arch.swiglu,
              "layer_norm_eps": arch.layer_norm_eps, "image_size": grid * patch, "patch_size": patch,
              "num_channels": 3, "qkv_bias": qkv_bias, "layerscale_value": 1.0, "num_register_tokens": registers}
    return out, config


def block_tensors(sd: dict, src: str, dst: str, dim: int, swiglu: bool, qkv_bias: bool) -> dict[str, torch.Tensor]:
    """One timm block's tensors (removed from ``sd``) under transformers' names."""
    take = sd.pop
    out = {f"{dst}norm1.weight": take(f"{src}norm1.weight"), f"{dst}norm1.bias": take(f"{src}norm1.bias"),
           f"{dst}norm2.weight": take(f"{src}norm2.weight"), f"{dst}norm2.bias": take(f"{src}norm2.bias"),
           f"{dst}attention.output.dense.weight": take(f"{src}attn.proj.weight"),
           f"{dst}attention.output.dense.bias": take(f"{src}attn.proj.bias")}
    qkv = take(f"{src}attn.qkv.weight")  # rows [q | k | v], as Attention.forward reshapes them
    bias = take(f"{src}attn.qkv.bias") if qkv_bias else None
    for j, name in enumerate(("query", "key", "value")):
        out[f"{dst}attention.attention.{name}.weight"] = qkv[j * dim : (j + 1) * dim]
        if bias is not None:
            out[f"{dst}attention.attention.{name}.bias"] = bias[j * dim : (j + 1) * dim]
    for n in (1, 2):
        gamma = sd.pop(f"{src}ls{n}.gamma", None)  # init_values=None in timm: no layer scale, i.e. ones
        out[f"{dst}layer_scale{n}.lambda1"] = torch.ones(dim, dtype=qkv.dtype) if gamma is None else gamma
    fc1, fc1_b = take(f"{src}mlp.fc1.weight"), take(f"{src}mlp.fc1.bias")
    fc2, fc2_b = take(f"{src}mlp.fc2.weight"), take(f"{src}mlp.fc2.bias")
    if swiglu:
        out |= {f"{dst}mlp.weights_in.weight": swiglu_weights_in(fc1),
                f"{dst}mlp.weights_in.bias": swiglu_weights_in(fc1_b),
                f"{dst}mlp.weights_out.weight": fc2, f"{dst}mlp.weights_out.bias": fc2_b}
    else:
        out |= {f"{dst}mlp.fc1.weight": fc1, f"{dst}mlp.fc1.bias": fc1_b,
                f"{dst}mlp.fc2.weight": fc2, f"{dst}mlp.fc2.bias": fc2_b}
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_timm_vit(checkpoint: str | Path, arch: str | TimmViTArch, out_dir: str | Path,
                     overwrite: bool = False) -> Path:
    """Write the transformers folder of a timm ViT checkpoint (file or folder) to ``out_dir``; return ``out_dir``.

    ``arch``: ``"uni"``, ``"uni2-h"`` or a :class:`TimmViTArch`.  The folder
    is loaded back with the ViT family's loader before returning; on any
    failure nothing is left in ``out_dir``.
    """
    from safetensors.torch import save_file

    arch, out = parse_arch(arch), Path(out_dir)
    check_output_dir(out, CONVERSION, overwrite)  # only an earlier conversion is ever replaced
    source = find_checkpoint(Path(checkpoint))
    tensors, config = convert_state_dict(read_state_dict(source), arch)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name in WRITTEN:
            (out / name).unlink(missing_ok=True)
        try:
            model_config = transformers_class("Dinov2WithRegistersConfig")(**config)
        except (TypeError, ValueError) as exc:  # transformers 5 validates each field's type
            raise ModelLoadError(f"transformers refuses the converted config ({exc})") from exc
        model_config.save_pretrained(str(out))
        meta = {"format": "pt", "converted_from": source.name, "source_sha256": sha256_of(source),
                "timm_arch": arch.name}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata=meta)
        (out / "preprocessor_config.json").write_text(json.dumps(
            {"do_normalize": True, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}, indent=2))
        loaded = load_vit_folder(out)  # refuses a tensor the model lacks; a tensor it ignores is a bug here
        ignored = [n for n in loaded.notes if "ignored" in n]
        if ignored:
            raise ModelLoadError(f"{out}: the converted folder loads with {ignored[0]}")
    except BaseException:
        for name in WRITTEN:
            (out / name).unlink(missing_ok=True)
        if created:
            out.rmdir()
        raise
    return out
