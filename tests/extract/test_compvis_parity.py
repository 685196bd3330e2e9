"""CompVis checkpoint loading: a random diffusers model written in CompVis layout loads back to the same outputs.

The reverse key mapping (diffusers -> CompVis ``openaimodel``/``autoencoder``
names) is written here independently of the loader, which uses diffusers'
forward converters.  A wrong rename, a missing tensor or a wrong head count
shows up as an output mismatch or a load error.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel, VQModel

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.compvis_config import unet_config
from pathsegdiff.extract.backbones import BackboneSpec, load_backbone

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_compvis(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> CompVis UNetModel keys."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        n = 2 if ".".join(parts[:2]) in fixed else 1
        if ".".join(parts[:n]) in fixed:
            new = fixed[".".join(parts[:n])] + "." + ".".join(parts[n:])
        elif parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{1 + i * (layers + 1) + layers}.0.op.{rest.removeprefix('conv.')}"
            else:
                k = 1 + i * (layers + 1) + j
                new = f"input_blocks.{k}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"input_blocks.{k}.1.{rest}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}.{_rename(rest, RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
                new = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attn else 1}.{rest}"
            else:
                k = i * (layers + 1) + j
                new = f"output_blocks.{k}.0.{_rename(rest, RESNET)}" if kind == "resnets" else f"output_blocks.{k}.1.{rest}"
        else:
            raise AssertionError(f"unmapped UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vq_to_compvis(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers VQModel keys -> CompVis VQModel keys (1x1 conv attention weights)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        part, rest = parts[0], ".".join(parts[1:])
        if part in ("quant_conv", "post_quant_conv", "quantize"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{part}.norm_out.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            i, kind, rest = int(parts[2]), parts[3], ".".join(parts[5:])
            level, group = (i, "down") if parts[1] == "down_blocks" else (levels - 1 - i, "up")
            if kind in ("downsamplers", "upsamplers"):
                new = f"{part}.{group}.{level}.{'downsample' if group == 'down' else 'upsample'}.{rest}"
            else:
                new = f"{part}.{group}.{level}.block.{parts[4]}.{_rename(rest, VAE_RESNET)}"
        elif parts[1] == "mid_block":
            kind, j, rest = parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"{part}.mid.block_{j + 1}.{rest}"
            else:
                new = f"{part}.mid.attn_1.{_rename(rest, VAE_ATTN)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            raise AssertionError(f"unmapped VQ key {key}")
        out["first_stage_model." + new] = value
    return out


def _seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # nonzero everywhere, so no mapping error hides behind a zero layer
            p.copy_(torch.randn(p.shape, generator=gen) * (p[0].numel() if p.ndim > 1 else 25) ** -0.5)
    return module.eval()


UNET_YAML = dict(image_size=8, in_channels=3, out_channels=3, model_channels=32, attention_resolutions=[2, 4],
                 num_res_blocks=2, channel_mult=[1, 2, 3], num_heads=1, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=16, use_checkpoint=True, use_fp16=True)
VQ_YAML = dict(embed_dim=3, n_embed=16, ddconfig=dict(double_z=False, z_channels=3, resolution=32, in_channels=3,
               out_ch=3, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0),
               lossconfig={"target": "torch.nn.Identity"})


def project_yaml(unet_params: dict) -> dict:
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "conditioning_key": "crossattn",
        "scale_factor": 1.0,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet_params},
        "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": VQ_YAML},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.SSLEmbedder", "params": {
            "patch_ssl_key": "feat_20x", "region_ssl_key": "feat_5x", "patch_embed_dim": 24,
            "region_embed_dim": 12, "normalize_ssl": True}}}}}


def write_log_dir(root, unet_params, heads, ckpt_extra=None):
    """A CompVis log dir from random diffusers models; returns (unet, vq, cond state dict)."""
    config = unet_config(unet_params) | {"attention_head_dim": heads}
    unet = _seeded(UNet2DConditionModel(**config), 1)
    vq = _seeded(VQModel(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                         latent_channels=3, num_vq_embeddings=16, norm_num_groups=32, scaling_factor=1.0), 2)
    gen = torch.Generator().manual_seed(3)
    cond = {"cond_stage_model.patch_fc.weight": torch.randn(16, 24, generator=gen),
            "cond_stage_model.patch_fc.bias": torch.randn(16, generator=gen),
            "cond_stage_model.region_fc.weight": torch.randn(16, 12, generator=gen),
            "cond_stage_model.region_fc.bias": torch.randn(16, generator=gen)}
    sd = unet_to_compvis(unet.state_dict(), unet_params["num_res_blocks"]) | vq_to_compvis(vq.state_dict(), 2) | cond
    (root / "configs").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "configs" / "2024-01-01T00-00-00-project.yaml").write_text(yaml.safe_dump(project_yaml(unet_params)))
    torch.save({"state_dict": sd, "global_step": 7, **(ckpt_extra or {})}, root / "checkpoints" / "last.ckpt")
    return unet, vq, cond


def _unet_inputs():
    gen = torch.Generator().manual_seed(4)
    return torch.randn(2, 3, 8, 8, generator=gen), torch.tensor([50, 700]), torch.randn(2, 2, 16, generator=gen)


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("brca-like")
    return root, *write_log_dir(root, UNET_YAML, heads=[1, 1, 1])


def test_unet_first_stage_and_cond_match(reference_dir):
    root, unet, vq, cond = reference_dir
    ldm = load_backbone(str(root))
    assert BackboneSpec.parse(str(root)).family == "compvis" and ldm.model_id == f"compvis:{root.name}"
    x, t, ctx = _unet_inputs()
    with torch.no_grad():
        assert _rel_err(ldm.unet(x, t, encoder_hidden_states=ctx).sample, unet(x, t, encoder_hidden_states=ctx).sample) < 1e-4
        rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
        assert _rel_err(ldm.encode(rgb), vq.encode(rgb).latents) < 1e-4  # pre-quantisation, scale factor 1.0
    assert (ldm.latent_channels, ldm.downsample, ldm.scale_factor) == (3, 2, 1.0)
    assert (ldm.context_tokens, ldm.context_dim, ldm.ssl_dim) == (2, 16, 24)
    # cond: L2-normalised patch embedding through patch_fc; region token = region_fc(0) = its bias
    e = torch.randn(2, 24)
    expected_patch = torch.nn.functional.normalize(e, dim=-1) @ cond["cond_stage_model.patch_fc.weight"].T
    expected_patch += cond["cond_stage_model.patch_fc.bias"]
    got = ldm.context(e, 2)
    torch.testing.assert_close(got[:, 0], expected_patch)
    torch.testing.assert_close(got[:, 1], cond["cond_stage_model.region_fc.bias"].expand(2, -1))
    assert [round(float(ldm.alphas_cumprod[t]), 3) for t in (50, 100, 250)] == [0.917, 0.823, 0.508]


def test_head_count_pitfall(tmp_path):
    """num_head_channels gives a different head count per level; loading must follow it."""
    params = {k: v for k, v in UNET_YAML.items() if k != "num_heads"} | {"num_heads": -1, "num_head_channels": 16}
    heads = [2, 4, 6]  # 32, 64, 96 channels / 16
    unet, _, _ = write_log_dir(tmp_path / "m", params, heads=heads)
    ldm = load_backbone(str(tmp_path / "m"))
    assert list(ldm.unet.config.attention_head_dim) == heads
    x, t, ctx = _unet_inputs()
    with torch.no_grad():
        right = unet(x, t, encoder_hidden_states=ctx).sample
        assert _rel_err(ldm.unet(x, t, encoder_hidden_states=ctx).sample, right) < 1e-4
        # the same weights load without complaint into a UNet with one head per level ...
        wrong = UNet2DConditionModel(**(dict(ldm.unet.config) | {"attention_head_dim": [1, 1, 1]}))
        wrong.load_state_dict(ldm.unet.state_dict())
        # ... and give other outputs: this is the silent failure the loader avoids
        assert _rel_err(wrong(x, t, encoder_hidden_states=ctx).sample, right) > 1e-2


@pytest.fixture
def fake_class(monkeypatch):
    """A class that pickles under a given module path, importable only during the test."""

    def make(module_name: str, class_name: str) -> type:
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        cls = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
        setattr(sys.modules[module_name], class_name, cls)
        return cls

    return make


def test_lightning_metadata_loads_without_lightning(tmp_path, fake_class, monkeypatch):
    obj = fake_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")()
    obj.best_model_score = 1.0
    write_log_dir(tmp_path / "m", UNET_YAML, heads=[1, 1, 1], ckpt_extra={"callbacks": {"cb": obj}})
    monkeypatch.undo()  # lightning is not installed when loading
    assert "pytorch_lightning" not in sys.modules
    assert load_backbone(str(tmp_path / "m")).context_tokens == 2


def test_foreign_classes_are_refused(tmp_path, fake_class, monkeypatch):
    write_log_dir(tmp_path / "m", UNET_YAML, heads=[1, 1, 1], ckpt_extra={"x": fake_class("evil_payload", "Runner")()})
    monkeypatch.undo()
    with pytest.raises(ModelLoadError, match=r"last\.ckpt.*evil_payload\.Runner.*refusing"):
        load_backbone(str(tmp_path / "m"))


def test_bad_log_dirs(tmp_path, reference_dir):
    root, *_ = reference_dir
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a-project.yaml").write_text(yaml.safe_dump(project_yaml(UNET_YAML)))
    with pytest.raises(ModelLoadError, match=r"checkpoints/last\.ckpt: checkpoint file not found"):
        load_backbone(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes((root / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="last.ckpt: cannot read checkpoint"):
        load_backbone(str(tmp_path))
    # a yaml for an unsupported model
    bad = project_yaml(UNET_YAML)
    bad["model"]["params"]["cond_stage_config"]["target"] = "ldm.modules.encoders.modules.FrozenCLIPEmbedder"
    (tmp_path / "configs" / "a-project.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ModelLoadError, match="a-project.yaml: cond_stage_config 'FrozenCLIPEmbedder' is not supported"):
        load_backbone(str(tmp_path))
    # weights that do not fit the yaml: name the file and a few missing keys
    other = project_yaml(UNET_YAML | {"channel_mult": [1, 2, 4]})
    (tmp_path / "configs" / "a-project.yaml").write_text(yaml.safe_dump(other))
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes((root / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(ModelLoadError, match="last.ckpt: (the )?UNet weights do not match"):
        load_backbone(str(tmp_path))


def test_reference_config_gives_the_documented_inventory():
    """The BRCA-20x unet_config -> diffusers config: parameter count and the documented block shapes."""
    from pathsegdiff.extract.backbones.compvis_config import REFERENCE_UNET
    from pathsegdiff.extract.backbones.unet_blocks import unet_block_shapes

    config = unet_config(REFERENCE_UNET)
    assert config["attention_head_dim"] == [1, 1, 1, 1]
    assert config["down_block_types"] == ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 3
    with torch.device("meta"):  # shapes only: no memory, no time
        unet = UNet2DConditionModel(**config)
    n_params = sum(p.numel() for p in unet.parameters())
    assert 350e6 < n_params < 450e6
    shapes = unet_block_shapes(unet, 256 // 4)
    assert shapes == {"mid": (960, 8, 8), "up0.pre": (960, 8, 8), "up0": (960, 16, 16), "up1.pre": (576, 16, 16),
                      "up1": (576, 32, 32), "up2.pre": (384, 32, 32), "up2": (384, 64, 64), "up3": (192, 64, 64)}


def test_safetensors_checkpoint(tmp_path, reference_dir):
    from safetensors.torch import save_file

    root, unet, _, _ = reference_dir
    sd = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "checkpoints").mkdir()
    for yaml_file in (root / "configs").iterdir():
        (tmp_path / "configs" / yaml_file.name).write_bytes(yaml_file.read_bytes())
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "checkpoints" / "model.safetensors")
    ldm = load_backbone(str(tmp_path))
    assert ldm.weights_sha256 == load_backbone(str(root)).weights_sha256  # identity follows weights, not file format


def test_scale_by_std_uses_the_learned_scale_factor(tmp_path, reference_dir):
    """A scale_by_std model keeps its learned scale_factor as a checkpoint buffer; the yaml's value is not it."""
    root, _, vq, _ = reference_dir
    for part in ("configs", "checkpoints"):
        (tmp_path / part).mkdir()
    yaml_file = next((root / "configs").iterdir())
    config = yaml.safe_load(yaml_file.read_text())
    config["model"]["params"].update(scale_by_std=True, scale_factor=1.0)
    (tmp_path / "configs" / yaml_file.name).write_text(yaml.safe_dump(config))
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"]["scale_factor"] = torch.tensor(0.37)
    torch.save(ckpt, tmp_path / "checkpoints" / "last.ckpt")
    ldm = load_backbone(str(tmp_path))
    assert ldm.scale_factor == pytest.approx(0.37)
    rgb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        assert _rel_err(ldm.encode(rgb), vq.encode(rgb).latents * 0.37) < 1e-4
