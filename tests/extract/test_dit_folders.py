"""DiT folders as people download them: a class-conditional DiT (DiT-XL-2-256's config, shrunk) runs under its
null class, a PixCell-256 folder loads as PixArt, and anything else is refused in one line naming what is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel, PixArtTransformer2DModel
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones import load_backbone
from pathsegdiff.extract.backbones.dit import SCHEDULER_CONFIG, TRANSFORMER_CONFIG, VAE_CONFIG
from pathsegdiff.extract.backbones.dit_backbone import ClassConditionalDiT, DiT
from pathsegdiff.extract.backbones.seeding import seed_module
from pathsegdiff.extract.conditioning import make_conditioner
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
WEIGHTS = "diffusion_pytorch_model.safetensors"
# facebook/DiT-XL-2-256's transformer/config.json (diffusers 0.12 wrote the generic class name), shrunk: 28 -> 2
# layers, 16 x 72 -> 2 x 16 heads; 1000 ImageNet classes, learn_sigma (out_channels 8), latent 32 for 256 px.
DIT_XL_2_256 = {"_class_name": "Transformer2DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
                "attention_head_dim": 16, "dropout": 0.0, "in_channels": 4, "norm_elementwise_affine": False,
                "norm_num_groups": 32, "norm_type": "ada_norm_zero", "num_attention_heads": 2,
                "num_embeds_ada_norm": 1000, "num_layers": 2, "out_channels": 8, "patch_size": 2,
                "sample_size": 32, "upcast_attention": False}


def finish_folder(root: Path) -> Path:
    vae = AutoencoderKL(**VAE_CONFIG)
    seed_module(2, "vae", vae)
    vae.save_pretrained(root / "vae")
    DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    return root


def dit_folder(root: Path) -> Path:
    kwargs = {k: v for k, v in DIT_XL_2_256.items() if not k.startswith("_")}
    transformer = DiTTransformer2DModel(**kwargs)
    seed_module(1, "transformer", transformer)
    transformer.save_pretrained(root / "transformer")
    config = json.loads((root / "transformer" / "config.json").read_text())
    (root / "transformer" / "config.json").write_text(json.dumps({**config, "_class_name": "Transformer2DModel"}))
    return finish_folder(root)


def pixcell_folder(root: Path, tokens: int = 1) -> Path:
    """What PixCell's own PixCellTransformer2DModel saves: PixArt's config and tensors, ``caption_num_tokens``, and
    its learnt unconditional embedding ``caption_projection.uncond_embedding`` (caption_channels 1536: UNI-2h)."""
    transformer = PixArtTransformer2DModel(**{**TRANSFORMER_CONFIG, "caption_channels": 1536})
    seed_module(3, "transformer", transformer)
    transformer.save_pretrained(root / "transformer")
    config = json.loads((root / "transformer" / "config.json").read_text())
    config |= {"_class_name": "PixCellTransformer2DModel", "caption_num_tokens": tokens}
    (root / "transformer" / "config.json").write_text(json.dumps(config))
    weights = load_file(root / "transformer" / WEIGHTS)
    weights["caption_projection.uncond_embedding"] = torch.randn(tokens, 1536)
    save_file(weights, root / "transformer" / WEIGHTS, metadata={"format": "pt"})
    return finish_folder(root)


@pytest.fixture
def tiles():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 64, 64), generator=gen, dtype=torch.uint8), ["s/0", "s/1"]


def test_a_class_conditional_dit_runs_under_its_null_class(tmp_path, tiles):
    dit = load_backbone(str(dit_folder(tmp_path / "DiT-XL-2-256")))
    assert isinstance(dit, ClassConditionalDiT) and dit.ssl_dim == 0 and dit.null_class == 1000
    assert dit.blocks() == ["block0", "block1"] and dit.block_shapes(256)["block1"] == (32, 16, 16)
    assert any("null class" in note for note in dit.notes) and dit.describe()["class_label"] == 1000
    featurizer = Featurizer(dit, FeatureConfig(blocks=("block0", "block1"), timesteps=(50,)))
    out = featurizer(*tiles)
    # the same blocks inside diffusers' own forward, with the null label
    seen = {}
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
             for i, b in enumerate(dit.transformer.transformer_blocks)]
    try:
        a = float(dit.alphas_cumprod[50])
        from pathsegdiff.extract.featurize import tile_noise

        z0 = out.latent
        eps = tile_noise(tuple(z0.shape[1:]), tiles[1], 0, 50, 0)
        with torch.no_grad():
            dit.transformer(a**0.5 * z0 + (1 - a) ** 0.5 * eps, timestep=torch.tensor([50, 50]),
                            class_labels=torch.tensor([1000, 1000]))
    finally:
        for h in hooks:
            h.remove()
    for i in (0, 1):
        assert torch.allclose(out.features[50][f"block{i}"], seen[i].transpose(1, 2).reshape(2, 32, 4, 4), atol=1e-6)
    with pytest.raises(ConfigError, match="not conditioned on an SSL embedding; use --conditioning null"):
        make_conditioner("precomputed:/nowhere/uni.npy", dit)


def test_a_pixcell_256_folder_loads_as_pixart(tmp_path, tiles):
    root = pixcell_folder(tmp_path / "PixCell-256")
    pixcell = load_backbone(str(root))
    assert type(pixcell) is DiT and pixcell.ssl_dim == 1536
    assert any("PixCell-256" in note and "precomputed" in note for note in pixcell.notes)
    # the same tensors as a PixArt folder: the same features, for a UNI-2h-sized embedding
    config = json.loads((root / "transformer" / "config.json").read_text())
    del config["caption_num_tokens"]
    (root / "transformer" / "config.json").write_text(json.dumps({**config, "_class_name": "PixArtTransformer2DModel"}))
    weights = load_file(root / "transformer" / WEIGHTS)
    del weights["caption_projection.uncond_embedding"]
    save_file(weights, root / "transformer" / WEIGHTS, metadata={"format": "pt"})
    pixart = load_backbone(str(root))
    ssl = torch.randn(2, 1536, generator=torch.Generator().manual_seed(5))
    cfg = FeatureConfig(timesteps=(50,))
    ours, theirs = Featurizer(pixcell, cfg)(*tiles, ssl=ssl), Featurizer(pixart, cfg)(*tiles, ssl=ssl)
    for name in pixcell.default_blocks:
        assert torch.equal(ours.features[50][name], theirs.features[50][name])


def test_other_transformers_are_refused_in_one_line(tmp_path):
    root = pixcell_folder(tmp_path / "PixCell-1024", tokens=16)
    with pytest.raises(ModelLoadError, match="16 UNI-2h tokens per image \\(PixCell-1024\\) is not supported"):
        load_backbone(str(root))
    config_path = root / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "_class_name": "SD3Transformer2DModel"}))
    with pytest.raises(ModelLoadError, match="'SD3Transformer2DModel'.*not a supported DiT; supported: "
                                             "PixArtTransformer2DModel.*PixCell-256.*DiT-XL-2-256"):
        load_backbone(str(root))
    source = str(Path(__file__).parents[1] / "data" / "he_tiles")
    result = CliRunner().invoke(app, ["extract", source, "-o", str(tmp_path / "s.zarr"), "--model", str(root),
                                      "--tile-size", "64"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "not a supported DiT" in lines[0], result.output


def test_a_tensor_missing_from_the_weights_is_refused(tmp_path):
    """diffusers fills a missing tensor with random values and only warns; that would be noise, not features."""
    root = dit_folder(tmp_path / "cut")
    weights = load_file(root / "transformer" / WEIGHTS)
    del weights["proj_out_2.weight"]
    save_file(weights, root / "transformer" / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"transformer: 1 tensor\(s\) of the model missing.*proj_out_2.weight"):
        load_backbone(str(root))
