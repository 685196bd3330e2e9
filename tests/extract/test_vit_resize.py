"""A patch-14 ViT on 256 px tiles: each tile resized to a whole number of patches, stored on the grid it gives,
paired tile for tile with a diffusion store of the same source (extract both, train the same head, compare)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError
from pathsegdiff.extract.backbones import load_backbone
from pathsegdiff.extract.backbones.seeding import seed_module
from pathsegdiff.extract.featurize import FeatureConfig, Featurizer
from pathsegdiff.extract.run.config import ExtractConfig
from pathsegdiff.extract.run.describe import build_schema, load_featurizer
from pathsegdiff.store import open_store
from pathsegdiff.store.schema import identity_hash

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# tiny-vit's store at 256 px as the commit before resizing existed made it (transformers 5.25): the identity
# fields without the weights hash, and the identity they give with the weights hash of that commit.
TINY_VIT_256 = {"model_id": "tiny-vit-v1", "blocks": [["layer2", 64, 16, 16], ["layer3", 64, 16, 16]],
                "timesteps": [0], "noise_seed": 0, "draws": 1, "conditioning": "null", "tile_size": 256,
                "dtype": "float16", "codec": "lossless", "compute_dtype": "fp32",
                "model_config_sha256": "be41beb52ba98c5a2ecc386355fbf582ce6545b1926eae6edb19b0dd504bbea7"}
TINY_VIT_WEIGHTS = "bcc48ec325530f609a2edd5d9280a965a694bd4e63cba940452a161aa13a7f7e"
TINY_VIT_IDENTITY = "fefed418241ef70b"


class Source:
    """What build_schema reads of a source."""

    def __init__(self, tile_size: int):
        self.tile_size, self.class_names = tile_size, ("background", "nuclei")

    def __len__(self) -> int:
        return 4


def patch14_folder(root: Path) -> Path:
    """A DINOv2-layout ViT with patch 14 and a 518 px position table, as facebook/dinov2-*, shrunk; seeded."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                          image_size=518, patch_size=14, layer_norm_eps=1e-6)
    model = Dinov2Model(config)
    seed_module(14, "vit", model)
    model.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def vit14(tmp_path_factory):
    return patch14_folder(tmp_path_factory.mktemp("models") / "dinov2-p14")


def test_a_tiny_vit_store_keeps_its_identity():
    """256 px is 16 patches of 16: no resize, the same identity fields (and, with the same weights, hash)."""
    cfg = ExtractConfig(model="tiny-vit")
    featurizer = load_featurizer(cfg)
    assert featurizer.input_size(256) == 256
    fields = build_schema(Source(256), featurizer, cfg).features.identity_fields()
    assert {k: v for k, v in fields.items() if k != "weights_sha256"} == TINY_VIT_256
    if fields["weights_sha256"] == TINY_VIT_WEIGHTS:  # state-dict names (so this hash) depend on transformers
        assert identity_hash(fields) == TINY_VIT_IDENTITY


def test_a_patch14_vit_resizes_256_px_tiles_to_252(vit14):
    backbone = load_backbone(str(vit14))
    featurizer = Featurizer(backbone)
    assert featurizer.input_size(256) == 252 and featurizer.input_size(252) == 252
    assert featurizer.block_shapes(256) == {"layer2": (32, 18, 18), "layer3": (32, 18, 18)}

    gen = torch.Generator().manual_seed(3)
    rgb = torch.randint(0, 256, (3, 3, 256, 256), generator=gen, dtype=torch.uint8)
    ids = ["s/0", "s/1", "s/2"]
    out = featurizer(rgb, ids).features[0]
    # by hand: bicubic with antialiasing to 252 px, clamped, normalised, the model's last hidden state
    x = F.interpolate(rgb.float() / 127.5 - 1, size=(252, 252), mode="bicubic", antialias=True).clamp(-1, 1)
    with torch.no_grad():
        last = backbone.model(pixel_values=backbone.encode(x)).last_hidden_state
    assert torch.allclose(out["layer3"], last[:, 1:].transpose(1, 2).reshape(3, 32, 18, 18), atol=1e-5)
    alone = [featurizer(rgb[i : i + 1], ids[i : i + 1]).features[0]["layer3"] for i in range(3)]
    assert torch.equal(out["layer3"], torch.cat(alone))  # the resize does not depend on the batch

    at224 = Featurizer(backbone, FeatureConfig(input_size=224))
    assert at224.block_shapes(256)["layer3"] == (32, 16, 16)
    assert at224(rgb[:1], ids[:1]).features[0]["layer3"].shape == (1, 32, 16, 16)
    assert Featurizer(backbone).input_size(64) == 56  # a small tile: 4 x 4 patches
    with pytest.raises(ConfigError, match="multiple of 14"):
        Featurizer(backbone, FeatureConfig(input_size=250))
    with pytest.raises(ConfigError, match="tile size 8 gives no whole number of patches of 14"):
        Featurizer(backbone).block_shapes(8)


def test_the_input_size_is_in_the_identity_and_only_vits_take_one(vit14, tiny):
    backbone = load_backbone(str(vit14))
    cfgs = {size: ExtractConfig(model=str(vit14), features=FeatureConfig(input_size=size)) for size in (None, 224)}
    specs = {size: build_schema(Source(256), Featurizer(backbone, cfg.features), cfg).features
             for size, cfg in cfgs.items()}
    assert specs[None].blocks[0].shape == (32, 18, 18) and specs[224].blocks[0].shape == (32, 16, 16)
    assert specs[None].identity() != specs[224].identity()
    with pytest.raises(ConfigError, match="takes tiles at their own size.*ViT models only"):
        Featurizer(tiny, FeatureConfig(input_size=224))
    assert FeatureConfig.from_dict({"blocks": None, "timesteps": None, "draws": 1, "seed": 0}).input_size is None
    assert FeatureConfig.from_dict(cfgs[224].features.to_dict()).input_size == 224


def he_folder(root: Path) -> Path:
    """Three 512 x 256 H&E crops of target_image.png (two 256 px tiles each) with a rough nuclei mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nnuclei\n")
    src = Image.open(DATA / "target_image.png").convert("RGB")
    for x, y in ((0, 0), (400, 300), (200, 700)):
        crop = src.crop((x, y, x + 512, y + 256))
        crop.save(root / "images" / f"he_x{x}_y{y}.png")
        gray = np.asarray(crop.convert("L").filter(ImageFilter.GaussianBlur(1.5)))
        Image.fromarray((gray < 110).astype(np.uint8)).save(root / "masks" / f"he_x{x}_y{y}.png")
    return root


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_baseline_recipe_end_to_end(vit14, tmp_path):
    """README: extract the diffusion model and the ViT from one source, train the same head on both, compare.

    Seeded, untrained models: this checks the plumbing (the pairing, the shapes, the report), not the biology.
    """
    source = he_folder(tmp_path / "he")
    stores = {"tiny": tmp_path / "tiny.zarr", "vit": tmp_path / "vit.zarr"}
    invoke("extract", source, "-o", stores["tiny"], "--model", "tiny", "--blocks", "up1", "--timesteps", "50",
           "--quiet")
    invoke("extract", source, "-o", stores["vit"], "--model", vit14, "--quiet")
    tiny, vit = open_store(stores["tiny"]), open_store(stores["vit"])
    assert vit.n_tiles == tiny.n_tiles == 6 and len(vit.written()) == 6
    assert {b.name: b.shape for b in vit.schema.features.blocks} == {"layer2": (32, 18, 18), "layer3": (32, 18, 18)}
    prov = vit.provenance
    assert "input_size" not in prov["extract"]["features"] and prov["backbone"]["patch_size"] == 14
    assert vit.schema.features.tile_size == tiny.schema.features.tile_size == 256
    assert list(vit.tile_ids()) == list(tiny.tile_ids())  # the same tiles, in the same order
    for i in range(vit.n_tiles):
        a, b = vit.read_tile(i), tiny.read_tile(i)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)  # untouched by the resize

    runs = {name: tmp_path / f"run-{name}" for name in stores}
    for name, store in stores.items():
        out = invoke("train", store, "-o", runs[name], "--head", "fcn", "--epochs", "1", "--quiet")
        assert "fcn head" in out and "mIoU" in out
    out = invoke("compare", runs["tiny"], runs["vit"])
    assert "| miou |" in out
    deltas = json.loads(invoke("compare", runs["tiny"], runs["vit"], "--json"))["deltas"]
    assert {"miou", "pixel_accuracy"} <= {d["metric"] for d in deltas}
