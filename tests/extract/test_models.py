"""Model spec parsing, the tiny model, and the LDM object's contract."""

from __future__ import annotations

import json

import pytest
import torch

from pathsegdiff.errors import ModelLoadError
from pathsegdiff.extract.backbones import BackboneSpec, builtin_ids, load_backbone
from pathsegdiff.extract.backbones.ldm import LDM
from pathsegdiff.extract.backbones.tiny import build_tiny


def test_parse_tiny_and_missing_paths(tmp_path):
    assert BackboneSpec.parse("tiny") == BackboneSpec("tiny", "tiny") and "tiny" in builtin_ids()
    with pytest.raises(ModelLoadError, match="nowhere"):
        BackboneSpec.parse(str(tmp_path / "nowhere"))
    (tmp_path / "file.ckpt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="file.ckpt.*got a file"):
        BackboneSpec.parse(str(tmp_path / "file.ckpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="empty: not a recognised model directory"):
        load_backbone(str(tmp_path / "empty"))


def test_tiny_contract(tiny):
    assert isinstance(tiny, LDM)
    assert tiny.model_id == "tiny-v1" and tiny.untrained
    assert (tiny.latent_channels, tiny.downsample) == (3, 4)
    assert (tiny.context_tokens, tiny.context_dim, tiny.ssl_dim) == (2, 64, 384)
    assert tiny.alphas_cumprod.shape == (1000,)
    # the reference schedule (docs/architecture.md): abar at t = 50, 100, 250
    assert [round(float(tiny.alphas_cumprod[t]), 3) for t in (50, 100, 250)] == [0.917, 0.823, 0.508]
    rgb = torch.rand(2, 3, 64, 64) * 2 - 1
    assert tiny.encode(rgb).shape == (2, 3, 16, 16)
    assert tiny.context(None, 2).shape == (2, 2, 64)
    assert tiny.context(torch.randn(2, 384), 2).shape == (2, 2, 64)
    with pytest.raises(ModelLoadError, match="expected \\(2, 384\\)"):
        tiny.context(torch.randn(2, 100), 2)


def test_null_context_is_the_projection_bias(tiny):
    # zero embeddings stay zero through L2 normalisation: each token is its layer's bias
    ctx = tiny.context(None, 1)[0]
    assert torch.equal(ctx[0], tiny.cond.patch_fc.bias) and torch.equal(ctx[1], tiny.cond.region_fc.bias)
    # a real embedding is normalised first: its scale does not matter
    e = torch.randn(1, 384)
    torch.testing.assert_close(tiny.context(e, 1), tiny.context(5 * e, 1))


def test_tiny_weights_are_deterministic(tiny):
    again = build_tiny()
    assert again.weights_sha256 == tiny.weights_sha256 and again.config_sha256 == tiny.config_sha256
    for a, b in zip(again.unet.state_dict().values(), tiny.unet.state_dict().values()):
        assert torch.equal(a, b)
    # no layer left at zero (diffusers zero-initialises some output convs): every path carries signal
    assert all(p.abs().max() > 0 for p in tiny.unet.parameters())


def test_to_dtype_round_trip():
    ldm = build_tiny().to("cpu", torch.bfloat16)
    assert ldm.dtype == torch.bfloat16 and ldm.cond.patch_fc.weight.dtype == torch.bfloat16
    out = ldm.encode(torch.zeros(1, 3, 32, 32))
    assert out.dtype == torch.bfloat16


# --- diffusers folder ---------------------------------------------------------


def write_diffusers_folder(root, with_text_encoder: bool):
    """A tiny SD-1.x-shaped folder: f8 KL VAE, cross-attention UNet, scaled-linear schedule."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                norm_num_groups=8, cross_attention_dim=32, attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, scaling_factor=0.18215)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    if with_text_encoder:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
        (root / "vocab.json").write_text(json.dumps(vocab))
        (root / "merges.txt").write_text("#version: 0.2\n")
        CLIPTokenizer(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"),
                      model_max_length=6).save_pretrained(root / "tokenizer")
        CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, max_position_embeddings=6)).save_pretrained(root / "text_encoder")
    return unet, vae


@pytest.mark.parametrize("with_text_encoder", [False, True])
def test_diffusers_folder(tmp_path, with_text_encoder):
    from pathsegdiff.extract.backbones.ldm import scaled_linear_alphas_cumprod
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

    root = tmp_path / "sd-tiny"
    unet, vae = write_diffusers_folder(root, with_text_encoder)
    ldm = load_backbone(str(root))
    assert BackboneSpec.parse(str(root)).family == "diffusers-unet" and ldm.model_id == "diffusers:sd-tiny"
    assert (ldm.latent_channels, ldm.downsample, ldm.ssl_dim, ldm.context_dim) == (4, 8, 0, 32)
    assert not ldm.untrained and ldm.scale_factor == pytest.approx(0.18215)
    torch.testing.assert_close(ldm.alphas_cumprod.double(), scaled_linear_alphas_cumprod(0.00085, 0.012), rtol=1e-6, atol=1e-7)
    rgb = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(ldm.encode(rgb), vae.encode(rgb).latent_dist.mode() * 0.18215)
    ctx = ldm.context(None, 3)
    if with_text_encoder:
        assert ctx.shape == (3, 6, 32) and ctx.abs().sum() > 0 and "empty-prompt" in ldm.notes[0]
    else:
        assert ctx.shape == (3, 77, 32) and not ctx.any() and "zeros" in ldm.notes[0]
    # the block arithmetic holds for an f8 model too
    featurizer = Featurizer(ldm, FeatureConfig(blocks=tuple(ldm.blocks()), timesteps=(100,)))
    out = featurizer(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), ["a", "b"])
    assert out.latent.shape == (2, 4, 8, 8)
    assert {b: tuple(x.shape[1:]) for b, x in out.features[100].items()} == featurizer.block_shapes(64)


def test_diffusers_folder_missing_parts(tmp_path):
    root = tmp_path / "broken"
    write_diffusers_folder(root, with_text_encoder=False)
    (root / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"scheduler_config\.json: not found"):
        load_backbone(str(root))
    (root / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="unet: cannot load UNet2DConditionModel"):
        load_backbone(str(root))
