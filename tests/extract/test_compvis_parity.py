"""CompVis checkpoint loading: a random diffusers model written in CompVis layout loads back to the same outputs.

The reverse key mapping (diffusers -> CompVis ``openaimodel``/``autoencoder``
names) is written in tests/helpers/compvis.py independently of the loader, which
uses diffusers' forward converters.  A wrong rename, a missing tensor or a wrong head count
shows up as an output mismatch or a load error.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel

from helpers.compvis import UNET_YAML, project_yaml, write_log_dir
from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones.compvis_config import unet_config
from pathsegdiff.extract.backbones import BackboneSpec, load_backbone


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
