"""The diffusion-transformer family: tiny-dit's blocks, its partial forward, a saved folder, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones import BackboneSpec, load_backbone
from pathsegdiff.extract.backbones.dit import SCHEDULER_CONFIG
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

DATA = Path(__file__).parents[1] / "data"
BLOCKS = ("block0", "block1", "block2", "block3")
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def dit():
    return load_backbone("tiny-dit")


@pytest.fixture
def tiles():
    """Three 64 px uint8 tiles and their ids."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 3, 64, 64), generator=gen, dtype=torch.uint8), ["s/0", "s/1", "s/2"]


def features(backbone, rgb, ids, blocks=BLOCKS, ssl=None):
    return Featurizer(backbone, FeatureConfig(blocks=blocks))(rgb, ids, ssl=ssl)


def test_block_inventory_and_shapes_match_a_real_run(dit, tiles):
    assert dit.blocks() == list(BLOCKS) and dit.default_blocks == ("block2", "block3")
    assert (dit.ssl_dim, dit.latent_channels, dit.downsample, dit.untrained) == (384, 4, 8, True)
    assert any("posterior mean" in note for note in dit.notes)
    out = features(dit, *tiles)
    for t in (50, 150):
        assert {b: tuple(x.shape[1:]) for b, x in out.features[t].items()} == dit.block_shapes(64)
    assert dit.block_shapes(64)["block0"] == (32, 4, 4) and out.latent.shape == (3, 4, 8, 8)
    assert dit.block_shapes(256) == {b: (32, 16, 16) for b in BLOCKS}
    with pytest.raises(ConfigError, match="multiple of 16"):
        dit.block_shapes(72)
    with pytest.raises(ConfigError, match=r"no block\(s\) \['block4'\]"):
        features(dit, *tiles, blocks=("block4",))


def test_captured_blocks_are_the_real_block_outputs(dit, tiles):
    """Hooks in the full forward see our blocks, and the last one through the model's head is its output."""
    tr = dit.transformer
    z = dit.encode(tiles[0][:2].float() / 127.5 - 1.0)
    context = dit.context(torch.randn(2, 384, generator=torch.Generator().manual_seed(1)), 2)
    seen = {}
    hooks = [block.register_forward_hook(lambda m, a, out, n=f"block{i}": seen.__setitem__(n, out))
             for i, block in enumerate(tr.transformer_blocks)]
    try:
        full = tr(z, encoder_hidden_states=context, timestep=torch.full((2,), 50)).sample
    finally:
        for h in hooks:
            h.remove()
    ours = dit.forward_blocks(z, 50, context, BLOCKS)
    h = w = z.shape[-1] // 2
    for name in BLOCKS:
        assert torch.equal(ours[name], seen[name].transpose(1, 2).reshape(2, -1, h, w)), name
    # the rest of PixArtTransformer2DModel.forward: modulated norm_out, proj_out, unpatchify
    _, embedded_t = tr.adaln_single(torch.full((2,), 50), None, batch_size=2, hidden_dtype=z.dtype)
    shift, scale = (tr.scale_shift_table[None] + embedded_t[:, None]).chunk(2, dim=1)
    tokens = ours["block3"].flatten(2).transpose(1, 2)
    x = tr.proj_out(tr.norm_out(tokens) * (1 + scale) + shift)
    x = torch.einsum("nhwpqc->nchpwq", x.reshape(2, h, w, 2, 2, tr.out_channels)).reshape(2, -1, 2 * h, 2 * w)
    assert torch.equal(x, full)


def test_partial_forward_stops_after_the_last_requested_block(dit, tiles):
    z = dit.encode(tiles[0][:1].float() / 127.5 - 1.0)
    calls = []
    handle = dit.transformer.transformer_blocks[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        out = dit.forward_blocks(z, 50, dit.context(None, 1), ("block1", "block0"))
    finally:
        handle.remove()
    assert list(out) == ["block1", "block0"] and not calls


def test_bit_identical_across_batch_sizes(dit, tiles):
    rgb, ids = tiles
    batched = features(dit, rgb, ids)
    for i in range(3):
        single = features(dit, rgb[i : i + 1], ids[i : i + 1])
        assert torch.equal(single.latent[0], batched.latent[i])
        for t in (50, 150):
            for b in BLOCKS:
                assert torch.equal(single.features[t][b][0], batched.features[t][b][i]), (i, t, b)


def test_conditioning_changes_the_features(dit, tiles):
    rgb, ids = tiles[0][:2], tiles[1][:2]
    ssl = torch.randn(2, 384, generator=torch.Generator().manual_seed(2))
    null = features(dit, rgb, ids, ("block1",)).features[50]["block1"]
    assert torch.equal(features(dit, rgb, ids, ("block1",), ssl=torch.zeros(2, 384)).features[50]["block1"], null)
    conditioned = features(dit, rgb, ids, ("block1",), ssl=ssl).features[50]["block1"]
    assert (conditioned - null).abs().mean() > 1e-2
    with pytest.raises(ModelLoadError, match="expected \\(2, 384\\)"):
        dit.context(torch.zeros(2, 768), 2)


def save_folder(dit, root: Path) -> Path:
    dit.transformer.save_pretrained(root / "transformer")
    dit.vae.save_pretrained(root / "vae")
    DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    return root


def test_folder_round_trip_gives_the_same_features(dit, tiles, tmp_path):
    root = save_folder(dit, tmp_path / "my-dit")
    assert BackboneSpec.parse(str(root)).family == "dit"
    loaded = load_backbone(str(root))
    assert loaded.model_id == "dit:my-dit" and loaded.weights_sha256 == dit.weights_sha256
    assert torch.equal(loaded.alphas_cumprod, dit.alphas_cumprod) and not loaded.untrained
    assert (loaded.scaling_factor, loaded.shift_factor) == (2.0, 0.1)
    ssl = torch.randn(3, 384, generator=torch.Generator().manual_seed(3))
    ours, theirs = features(dit, *tiles, ssl=ssl), features(loaded, *tiles, ssl=ssl)
    assert torch.equal(ours.latent, theirs.latent)
    for t in (50, 150):
        for b in BLOCKS:
            assert torch.equal(ours.features[t][b], theirs.features[t][b]), (t, b)


def test_broken_folders_name_the_file(dit, tmp_path):
    root = save_folder(dit, tmp_path / "broken")
    (root / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match=r"vae/config\.json: cannot load AutoencoderKL"):
        load_backbone(str(root))
    (root / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"scheduler_config\.json: not found"):
        load_backbone(str(root))
    cfg = json.loads((root / "transformer" / "config.json").read_text())
    (root / "transformer" / "config.json").write_text(json.dumps({**cfg, "caption_channels": None}))
    DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    dit.vae.save_pretrained(root / "vae")
    with pytest.raises(ModelLoadError, match="no caption projection"):
        load_backbone(str(root))


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_extract_train_evaluate_predict_through_the_cli(tmp_path):
    store, fcn, linear = tmp_path / "s.zarr", tmp_path / "fcn", tmp_path / "linear"
    # six 128x96 H&E crops -> 24 tiles of 64 px (2 x 2 each: the last row and column end at the edge)
    out = invoke("extract", DATA / "he_tiles", "-o", store, "--model", "tiny-dit", "--tile-size", "64", "--quiet")
    assert "24 tiles written" in out and "NOT trained" in out
    assert "posterior mean" in out  # the KL first stage's mean, said where the user sees it
    info = json.loads(invoke("store", "info", store, "--json"))
    assert info["blocks"] == {"block2": [32, 4, 4], "block3": [32, 4, 4]}
    assert info["identity_fields"]["model_id"] == "tiny-dit-v1"
    assert "block2 32x4x4, block3 32x4x4" in invoke("store", "info", store)
    assert "fcn head" in invoke("train", store, "-o", fcn, "--head", "fcn", "--epochs", "1", "--quiet")
    assert "linear head" in invoke("train", store, "-o", linear, "--head", "linear", "--epochs", "1", "--quiet")
    assert "val split" in invoke("evaluate", linear, "--split", "val")  # the store the run recorded
    image = tmp_path / "crop.png"
    Image.open(DATA / "target_image.png").convert("RGB").crop((100, 200, 228, 328)).save(image)
    out = invoke("predict", image, "--head", fcn, "-o", tmp_path / "pred", "--model", "tiny-dit")  # overlap: 16 px
    assert "assumed to be at the head's resolution" in out
    mask = Image.open(tmp_path / "pred" / "mask.png")
    assert mask.size == (128, 128)
    assert json.loads((tmp_path / "pred" / "prediction.json").read_text())["config"]["model"] == "tiny-dit"
