"""The ViT foundation-model family: tiny-vit's blocks, its partial forward, folders, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones import BackboneSpec, load_backbone
from pathsegdiff.extract.backbones.seeding import seed_module
from pathsegdiff.extract.backbones.vit import TINY_VIT_CONFIG
from pathsegdiff.extract.backbones.vit_backbone import FoundationViT
from pathsegdiff.extract.conditioning import make_conditioner
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer
from pathsegdiff.store import open_store

DATA = Path(__file__).parents[1] / "data"
TILES = DATA / "he_tiles"
FAST = ["--tile-size", "64", "--stride", "32", "--quiet"]  # 36 tiles from six 128x96 crops
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def vit():
    return load_backbone("tiny-vit")


def patch_map(tokens: torch.Tensor, skip: int, side: int) -> torch.Tensor:
    """(B, skip + side*side, C) tokens -> (B, C, side, side) map of the patch tokens."""
    return tokens[:, skip:].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_blocks_and_shapes_match_a_real_run(vit, tiles):
    rgb, ids = tiles
    assert vit.blocks() == ["layer0", "layer1", "layer2", "layer3"]
    assert vit.default_blocks == ("layer2", "layer3") and vit.default_timesteps == (0,)
    assert not vit.is_diffusion and vit.ssl_dim == 0 and vit.latent_channels == 0 and vit.untrained
    assert load_backbone("tiny-vit").weights_sha256 == vit.weights_sha256  # seeded: the same on every build
    featurizer = Featurizer(vit, FeatureConfig(blocks=tuple(vit.blocks())))
    assert featurizer.cfg.timesteps == (0,)
    out = featurizer(rgb[:2], ids[:2])
    assert {b: tuple(x.shape[1:]) for b, x in out.features[0].items()} == vit.block_shapes(64)
    assert vit.block_shapes(64)["layer0"] == (64, 4, 4)  # the 14 x 14 position table resampled to 4 x 4
    assert vit.block_shapes(256) == {f"layer{i}": (64, 16, 16) for i in range(4)}
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        vit.block_shapes(72)
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        vit.forward_blocks(vit.encode(torch.zeros(1, 3, 72, 72)), 0, None, ["layer0"])


def test_partial_forward_is_the_full_models_layers_and_stops_early(vit, tiles):
    """layer i = the final LayerNorm of hidden state i + 1, patch tokens only; later layers never run."""
    rgb, _ = tiles
    x = vit.encode(rgb[:2].float() / 127.5 - 1.0)
    with torch.no_grad():
        full = vit.model(pixel_values=x, output_hidden_states=True)
    for i, name in enumerate(vit.blocks()):
        expected = patch_map(vit.model.layernorm(full.hidden_states[i + 1]), 1, 4)
        assert torch.equal(vit.forward_blocks(x, 0, None, [name])[name], expected), name
    assert torch.equal(vit.forward_blocks(x, 0, None, ["layer3"])["layer3"], patch_map(full.last_hidden_state, 1, 4))
    ran = []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
             for i, layer in enumerate(vit.model.encoder.layer)]
    try:
        out = vit.forward_blocks(x, 0, None, ["layer1", "layer0"])
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0, 1] and list(out) == ["layer1", "layer0"]
    with pytest.raises(ConfigError, match="timestep 0 only"):
        vit.forward_blocks(x, 50, None, ["layer0"])


def test_register_tokens_are_dropped(tmp_path):
    """A UNI-2h-style model with registers: the maps hold patch tokens only, and its folder loads."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY_VIT_CONFIG, num_register_tokens=4))
    seed_module(1, "vit", model)
    reg = FoundationViT(model_id="reg", model=model)
    x = reg.encode(torch.zeros(1, 3, 64, 64))
    with torch.no_grad():
        last = reg.model(pixel_values=x).last_hidden_state  # (1, 1 + 4 + 16, 64)
    assert last.shape[1] == 21 and reg.describe()["register_tokens"] == 4
    assert torch.equal(reg.forward_blocks(x, 0, None, ["layer3"])["layer3"], patch_map(last, 5, 4))
    model.save_pretrained(tmp_path / "uni2h-like")
    loaded = load_backbone(str(tmp_path / "uni2h-like"))
    assert loaded.weights_sha256 == reg.weights_sha256 and loaded.prefix_tokens == 5


def test_features_do_not_depend_on_the_batch_size(vit, tiles):
    rgb, ids = tiles
    featurizer = Featurizer(vit)
    together = featurizer(rgb[:3], ids[:3]).features[0]
    alone = [featurizer(rgb[i : i + 1], ids[i : i + 1]).features[0] for i in range(3)]
    for name in vit.default_blocks:
        assert torch.equal(together[name], torch.cat([a[name] for a in alone])), name


def test_diffusion_options_and_ssl_conditioning_are_refused(vit):
    for cfg in (FeatureConfig(timesteps=(50,)), FeatureConfig(draws=2)):
        with pytest.raises(ConfigError, match="not a diffusion model.*--timesteps 0 and --draws 1"):
            Featurizer(vit, cfg)
    for arg in ("hipt:/nowhere/vit256_small_dino.pth", "precomputed:/nowhere/emb.npy"):
        with pytest.raises(ConfigError, match="not conditioned on an SSL embedding; use --conditioning null"):
            make_conditioner(arg, vit)
    assert vit.context(None, 3) is None


def test_folder_round_trip(vit, tiles, tmp_path):
    """save_pretrained of tiny-vit loads back as the same model: same hashes, the same features to the bit.

    Only ``model_id`` differs (it names the source), so a store of one does not take tiles of the other.
    """
    rgb, ids = tiles
    folder = tmp_path / "my-vit"
    vit.model.save_pretrained(folder)
    assert BackboneSpec.parse(str(folder)).family == "vit"
    loaded = load_backbone(str(folder))
    assert loaded.model_id == "vit:my-vit" and not loaded.untrained
    assert (loaded.weights_sha256, loaded.config_sha256) == (vit.weights_sha256, vit.config_sha256)
    assert "ImageNet" in loaded.notes[0]
    ours, theirs = Featurizer(vit)(rgb[:2], ids[:2]), Featurizer(loaded)(rgb[:2], ids[:2])
    for name in vit.default_blocks:
        assert torch.equal(ours.features[0][name], theirs.features[0][name]), name

    # another normalisation is another model: other config hash, other features, same weights
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    half = load_backbone(str(folder))
    assert half.weights_sha256 == vit.weights_sha256 and half.config_sha256 != vit.config_sha256
    assert torch.equal(half.encode(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2))
    assert not torch.equal(Featurizer(half)(rgb[:1], ids[:1]).features[0]["layer3"], ours.features[0]["layer3"][:1])


def test_bad_folders_are_refused_naming_the_file(vit, tmp_path):
    folder = tmp_path / "cut"
    vit.model.save_pretrained(folder)
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    del weights["layernorm.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: 1 tensor\(s\).*layernorm\.weight"):
        load_backbone(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: not found.*save_pretrained"):
        load_backbone(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelLoadError, match="not a recognised model directory.*model_type dinov2"):
        load_backbone(str(folder))


def test_cli_refuses_diffusion_options_before_a_store_exists(tmp_path):
    out = tmp_path / "s.zarr"
    for extra, fragment in ((["--timesteps", "50"], "not a diffusion model"),
                            (["--store-latent"], "has no latent to store; drop --store-latent"),
                            (["--conditioning", "hipt:x.pth"], "use --conditioning null")):
        code, output = invoke("extract", TILES, "-o", out, "--model", "tiny-vit", *FAST, *extra)
        assert code == 1 and fragment in output and "Traceback" not in output, output
        assert not out.exists()


def test_extract_train_evaluate_predict_end_to_end(vit, tmp_path):
    """What a user comparing a foundation model with a diffusion model runs, on real H&E tiles."""
    store = tmp_path / "vit.zarr"
    code, output = invoke("extract", TILES, "-o", store, "--model", "tiny-vit", *FAST)
    assert code == 0, output
    fs = open_store(store)
    assert len(fs.written()) == fs.n_tiles == 36 and fs.provenance["model_id"] == "tiny-vit-v1"
    assert fs.timesteps == (0,) and {b.name: b.shape for b in fs.schema.features.blocks} == {
        "layer2": (64, 4, 4), "layer3": (64, 4, 4)}

    code, output = invoke("store", "info", store)
    assert code == 0 and "timesteps  0" in output and "layer2 64x4x4, layer3 64x4x4" in output, output

    for head in ("fcn", "linear"):
        code, output = invoke("train", store, "-o", tmp_path / head, "--head", head, "--epochs", "1", "--quiet")
        assert code == 0 and f"{head} head" in output and "mIoU" in output, output
    code, output = invoke("evaluate", tmp_path / "fcn", "--store", store, "--split", "val")
    assert code == 0 and "val split" in output and "mIoU" in output, output

    image = tmp_path / "crop.png"
    Image.open(DATA / "target_image.png").convert("RGB").crop((100, 200, 260, 360)).save(image)
    code, output = invoke("predict", image, "--head", tmp_path / "linear", "-o", tmp_path / "pred",
                          "--model", "tiny-vit", "--overlap", "16")
    assert code == 0, output
    mask = np.asarray(Image.open(tmp_path / "pred" / "mask.png"))
    assert mask.shape == (160, 160) and set(np.unique(mask)) <= {0, 1}
    code, output = invoke("predict", image, "--head", tmp_path / "linear", "-o", tmp_path / "pred2", "--overlap", "16")
    assert code == 1 and "tiny-v1" in output, output  # the default model (tiny) is not the head's
