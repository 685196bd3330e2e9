"""UNI / UNI-2h checkpoints as published (timm layout) -> the transformers folder the ViT family loads.

The converted model's patch tokens are checked against a reference forward
written here from timm's source (``timm/models/vision_transformer.py``:
``VisionTransformer._pos_embed`` with ``dynamic_img_size``, ``Block``;
``timm/layers/attention.py``: ``Attention``; ``timm/layers/mlp.py``: ``Mlp``,
``GluMlp``/``SwiGLUPacked``; ``timm/layers/pos_embed.py``:
``resample_abs_pos_embed``), in plain torch: timm is not installed.  Then
each difference between timm and transformers is broken on purpose in the
conversion, and the check must fail.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pathsegdiff.errors import ModelLoadError, StoreExistsError
from pathsegdiff.extract.backbones import convert_timm, load_backbone
from pathsegdiff.extract.backbones.convert_timm import ARCHS, convert_timm_vit, swiglu_mlp_ratio

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TOL = 1e-5


# -- timm's forward, from its source -------------------------------------------------------------------
def resample_abs_pos_embed(posemb, new_size, num_prefix_tokens):
    """timm.layers.pos_embed.resample_abs_pos_embed: bicubic, antialias=True, prefix rows kept."""
    if new_size[0] * new_size[1] + num_prefix_tokens == posemb.shape[1] and new_size[0] == new_size[1]:
        return posemb
    hw = int((posemb.shape[1] - num_prefix_tokens) ** 0.5)
    prefix, posemb = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    posemb = posemb.reshape(1, hw, hw, -1).permute(0, 3, 1, 2)
    posemb = F.interpolate(posemb, size=new_size, mode="bicubic", antialias=True)
    posemb = posemb.permute(0, 2, 3, 1).reshape(1, -1, posemb.shape[1])
    return torch.cat([prefix, posemb], dim=1) if num_prefix_tokens else posemb


def timm_patch_tokens(sd, arch, x):
    """VisionTransformer.forward_features (dynamic_img_size=True) -> the patch tokens after ``norm``."""
    w = sd["patch_embed.proj.weight"]
    dim, patch, heads = w.shape[0], w.shape[-1], arch.num_heads
    x = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=patch).permute(0, 2, 3, 1)  # NHWC
    b, h, wd, c = x.shape
    prefix = [sd["cls_token"].expand(b, -1, -1)]
    if "reg_token" in sd:
        prefix.append(sd["reg_token"].expand(b, -1, -1))
    n_prefix = sum(p.shape[1] for p in prefix)
    pos = resample_abs_pos_embed(sd["pos_embed"], (h, wd), 0 if arch.no_embed_class else n_prefix)
    x = x.reshape(b, -1, c)
    if arch.no_embed_class:
        x = torch.cat(prefix + [x + pos], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + pos
    ln = lambda t, name: F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)  # noqa: E731
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        y = ln(x, p + "norm1")
        n = y.shape[1]
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, dim)
        y = F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        x = x + sd[p + "ls1.gamma"] * y
        y = F.linear(ln(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        if arch.swiglu:  # GluMlp, gate_last=False: act(x1) * x2
            x1, x2 = y.chunk(2, dim=-1)
            y = F.silu(x1) * x2
        else:
            y = F.gelu(y)
        x = x + sd[p + "ls2.gamma"] * F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return ln(x, "norm")[:, n_prefix:]  # (B, h*w, C)


# -- small checkpoints with UNI's and UNI-2h's key names ------------------------------------------------
def timm_state_dict(arch, dim, depth, patch, grid, seed=0):
    """A timm VisionTransformer state dict for ``arch``, shrunk: random weights of a size that keeps tokens O(1)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.1: torch.randn(*shape, generator=g) * s  # noqa: E731
    width = int(dim * (2.66667 * 2 if arch.swiglu else 4.0))  # timm: hidden_features = int(dim * mlp_ratio)
    sd = {"cls_token": r(1, 1, dim, s=0.5), "patch_embed.proj.weight": r(dim, 3, patch, patch, s=0.05),
          "patch_embed.proj.bias": r(dim), "norm.weight": 1 + r(dim), "norm.bias": r(dim),
          "pos_embed": r(1, grid * grid + (0 if arch.no_embed_class else 1), dim, s=0.5)}
    if arch.registers:
        sd["reg_token"] = r(1, arch.registers, dim, s=0.5)
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "norm2.weight": 1 + r(dim),
               p + "norm2.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim, s=0.3), p + "attn.qkv.bias": r(3 * dim),
               p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
               p + "ls1.gamma": 0.5 + r(dim), p + "ls2.gamma": 0.5 + r(dim),
               p + "mlp.fc1.weight": r(width, dim, s=0.2), p + "mlp.fc1.bias": r(width),
               p + "mlp.fc2.weight": r(dim, width // 2 if arch.swiglu else width), p + "mlp.fc2.bias": r(dim)}
    return sd


CASES = {  # name: (arch, dim, depth, patch, grid); UNI-2h's 24 heads and UNI's 16 at 4 dims each
    "uni": (ARCHS["uni"], 64, 2, 16, 4),
    "uni2-h": (ARCHS["uni2-h"], 96, 2, 14, 4),
}


def largest_error(sd, arch, folder, sides) -> float:
    """Largest |converted - reference| over the patch tokens of the last layer, for square inputs of ``sides``."""
    vit = load_backbone(str(folder))
    worst = 0.0
    for side in sides:
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
        ref = timm_patch_tokens(sd, arch, x)
        last = vit.blocks()[-1]
        with torch.no_grad():
            ours = vit.forward_blocks(x, 0, None, [last])[last].flatten(2).transpose(1, 2)
        worst = max(worst, float((ours - ref).abs().max()))
    return worst


def sides(patch, grid):
    return (patch * grid, patch * (grid + 2), patch * (grid - 1))  # the table's size, upsampled, downsampled


@pytest.mark.parametrize("name", list(CASES))
def test_converted_patch_tokens_match_timms_forward(name, tmp_path):
    arch, dim, depth, patch, grid = CASES[name]
    sd = timm_state_dict(arch, dim, depth, patch, grid)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    folder = convert_timm_vit(tmp_path / "pytorch_model.bin", name, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "dinov2_with_registers" and config["num_register_tokens"] == arch.registers
    assert config["patch_size"] == patch and config["image_size"] == patch * grid
    assert largest_error(sd, arch, folder, sides(patch, grid)) < TOL
    vit = load_backbone(str(folder))
    assert vit.prefix_tokens == 1 + arch.registers and vit.patch_size == patch and "preprocessor_config" in vit.notes[0]


def test_the_uni2h_widths_against_transformers_derivation():
    """UNI-2h: timm's fc1 is int(1536 * 5.33334) = 8192 wide, 4096 per half; transformers derives 5464 from that
    ratio (and takes only integer ratios); 4 gives 4096."""
    assert int(1536 * 2.66667 * 2) == 8192
    assert (int(int(1536 * 2.66667 * 2) * 2 / 3) + 7) // 8 * 8 == 5464
    assert swiglu_mlp_ratio(1536, 4096) == 4 and (int(1536 * 5 * 2 / 3) + 7) // 8 * 8 == 5120  # 5: int(5.33334)
    assert (int(int(96 * swiglu_mlp_ratio(96, 256)) * 2 / 3) + 7) // 8 * 8 == 256  # the shrunk case below


def test_a_full_size_uni2h_state_dict_converts(tmp_path):
    """UNI-2h's real shapes (depth cut to 1 to stay light): 1536 wide, 8 registers, 16 x 16 table, SwiGLU 4096."""
    arch = ARCHS["uni2-h"]
    g = torch.Generator().manual_seed(0)
    shapes = {"cls_token": (1, 1, 1536), "reg_token": (1, 8, 1536), "pos_embed": (1, 256, 1536),
              "patch_embed.proj.weight": (1536, 3, 14, 14), "patch_embed.proj.bias": (1536,),
              "norm.weight": (1536,), "norm.bias": (1536,)}
    p = "blocks.0."
    shapes |= {p + k: s for k, s in {"norm1.weight": (1536,), "norm1.bias": (1536,), "norm2.weight": (1536,),
                                       "norm2.bias": (1536,), "attn.qkv.weight": (4608, 1536), "attn.qkv.bias": (4608,),
                                       "attn.proj.weight": (1536, 1536), "attn.proj.bias": (1536,),
                                       "ls1.gamma": (1536,), "ls2.gamma": (1536,), "mlp.fc1.weight": (8192, 1536),
                                       "mlp.fc1.bias": (8192,), "mlp.fc2.weight": (1536, 4096),
                                       "mlp.fc2.bias": (1536,)}.items()}
    sd = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    folder = convert_timm_vit(tmp_path, "uni2-h", tmp_path / "uni2h")  # the downloaded folder is accepted too
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["mlp_ratio"]) == (1536, 24, 4)
    assert config["image_size"] == 224 and config["num_register_tokens"] == 8 and config["use_swiglu_ffn"]
    vit = load_backbone(str(folder))
    assert vit.model.encoder.layer[0].mlp.down_proj.in_features == 4096 and vit.prefix_tokens == 9
    assert largest_error(sd, arch, folder, (224,)) < TOL


# -- each difference broken on purpose: the check must fail -------------------------------------------
position_table, convert_state_dict = convert_timm.position_table, convert_timm.convert_state_dict
transformers_class = convert_timm.transformers_class


def with_class_row(pos_embed, no_embed_class):
    """Wrong: give the class token a position (the first patch's row) instead of none."""
    table, grid = position_table(pos_embed, no_embed_class)
    return torch.cat([pos_embed[:, :1], table[:, 1:]], dim=1), grid


def without_register_param(sd, arch):
    tensors, config = convert_state_dict(sd, arch)
    del tensors["embeddings.register_tokens"]  # Dinov2Model has no such parameter
    return tensors, config


BREAKS = {  # what: (checkpoint, {function of the conversion: its wrong version})
    "class-token slot in the position table": ("uni2-h", {"position_table": with_class_row}),
    "SwiGLU halves swapped": ("uni2-h", {"swiglu_weights_in": lambda fc1: torch.cat(fc1.chunk(2)[::-1])}),
    "transformers' derived SwiGLU width": ("uni2-h", {"swiglu_mlp_ratio": lambda dim, width: int(2.66667 * 2)}),
    "plain Dinov2Model (position resampling without antialiasing)": (
        "uni", {"transformers_class": lambda name: transformers_class(name.replace("WithRegisters", "")),
                "convert_state_dict": without_register_param}),
}


@pytest.mark.parametrize("what", list(BREAKS))
def test_breaking_a_difference_fails_the_check(what, tmp_path, monkeypatch):
    name, wrong = BREAKS[what]
    arch, dim, depth, patch, grid = CASES[name]
    sd = timm_state_dict(arch, dim, depth, patch, grid)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    for attr, function in wrong.items():
        monkeypatch.setattr(convert_timm, attr, function)
    try:
        folder = convert_timm_vit(tmp_path / "pytorch_model.bin", name, tmp_path / "out")
    except ModelLoadError:  # a wrong width does not even load: that fails the check too
        assert what == "transformers' derived SwiGLU width"
        return
    assert largest_error(sd, arch, folder, sides(patch, grid)) > 1e-3, what


def test_dropping_the_registers_fails_the_check(tmp_path):
    """Without its 8 registers the model attends to other tokens: converted as if it had none, it is off."""
    arch, dim, depth, patch, grid = CASES["uni2-h"]
    sd = timm_state_dict(arch, dim, depth, patch, grid)
    torch.save({k: v for k, v in sd.items() if k != "reg_token"}, tmp_path / "no_reg.bin")
    no_reg = convert_timm.TimmViTArch("uni2-h without registers", 24, True, True, registers=0)
    folder = convert_timm_vit(tmp_path / "no_reg.bin", no_reg, tmp_path / "out")
    assert largest_error(sd, arch, folder, sides(patch, grid)) > 1e-3
    with pytest.raises(ModelLoadError, match="0 register token.*uni2-h has 8; is --arch right"):
        convert_timm_vit(tmp_path / "no_reg.bin", "uni2-h", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_bad_checkpoints_and_folders_are_refused(tmp_path):
    arch, dim, depth, patch, grid = CASES["uni"]
    sd = timm_state_dict(arch, dim, depth, patch, grid)
    torch.save(sd, tmp_path / "uni.bin")
    with pytest.raises(ModelLoadError, match="pos_embed has 17 rows.*is --arch right"):
        convert_timm_vit(tmp_path / "uni.bin", "uni2-h", tmp_path / "a")  # UNI read as UNI-2h
    torch.save({**sd, "blocks.0.attn.q_norm.weight": torch.ones(4)}, tmp_path / "extra.bin")
    with pytest.raises(ModelLoadError, match="1 checkpoint tensor.*q_norm"):
        convert_timm_vit(tmp_path / "extra.bin", "uni", tmp_path / "b")
    with pytest.raises(ModelLoadError, match="unknown architecture 'uni3'"):
        convert_timm_vit(tmp_path / "uni.bin", "uni3", tmp_path / "c")
    out = convert_timm_vit(tmp_path / "uni.bin", "uni", tmp_path / "d")
    with pytest.raises(StoreExistsError, match="earlier 'convert timm-vit' output; pass --overwrite"):
        convert_timm_vit(tmp_path / "uni.bin", "uni", out)
    assert convert_timm_vit(tmp_path / "uni.bin", "uni", out, overwrite=True) == out
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StoreExistsError, match=r"'convert timm-vit' did not write \(notes.txt\)"):
        convert_timm_vit(tmp_path / "uni.bin", "uni", out, overwrite=True)
    assert not any((tmp_path / n).exists() for n in "abc")
