"""Conditioners: null, HIPT from DINO weights, precomputed files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.dino import DEPTH, DIM, HEADS, dino_vit_s16
from pathsegdiff.errors import ConfigError, InputError, ModelLoadError
from pathsegdiff.extract.conditioning import make_conditioner


def test_null_conditioner(tiny, tiles):
    rgb, ids = tiles
    cond = make_conditioner("null", tiny)
    assert (cond.name, cond.dim) == ("null", 384)
    out = cond.embed(rgb, ids)
    assert out.shape == (7, 384) and out.dtype == torch.float32 and not out.any()


def test_bad_conditioning_arguments(tiny, tmp_path):
    with pytest.raises(ConfigError, match="unknown conditioning 'clip'"):
        make_conditioner("clip", tiny)
    with pytest.raises(ModelLoadError, match="missing.pth: hipt file not found"):
        make_conditioner(f"hipt:{tmp_path / 'missing.pth'}", tiny)
    with pytest.raises(ConfigError, match="needs a path"):
        make_conditioner("hipt:", tiny)


# --- HIPT (random DINO weights: helpers/dino.py) ------------------------------


def reference_cls(sd: dict[str, torch.Tensor], rgb_uint8: torch.Tensor) -> torch.Tensor:
    """DINO's ViT forward written out: patchify, interpolated positions, 12 pre-norm blocks, CLS."""
    F = torch.nn.functional
    x = (rgb_uint8.float() / 255 - 0.5) / 0.5
    if x.shape[-1] != 256:
        x = F.interpolate(x, size=(256, 256), mode="bilinear", antialias=True)
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16).flatten(2).transpose(1, 2)
    pos = sd["pos_embed"]
    n = int((pos.shape[1] - 1) ** 0.5)
    grid = F.interpolate(pos[:, 1:].reshape(1, n, n, DIM).permute(0, 3, 1, 2), scale_factor=(16.1 / n, 16.1 / n),
                         mode="bicubic").permute(0, 2, 3, 1).reshape(1, 256, DIM)
    x = torch.cat([sd["cls_token"].expand(len(x), -1, -1), tokens], 1) + torch.cat([pos[:, :1], grid], 1)
    B, N, _ = x.shape
    for i in range(DEPTH):
        p = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (DIM,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = (h @ p("attn.qkv.weight").T + p("attn.qkv.bias")).reshape(B, N, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(-1)
        x = x + (attn @ v).transpose(1, 2).reshape(B, N, DIM) @ p("attn.proj.weight").T + p("attn.proj.bias")
        h = F.layer_norm(x, (DIM,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        x = x + F.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")) @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    return F.layer_norm(x, (DIM,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


@pytest.fixture(scope="module")
def hipt_file(tmp_path_factory):
    sd = dino_vit_s16()
    teacher = {f"backbone.{k}": v for k, v in sd.items()} | {"head.last_layer.weight_g": torch.ones(1, 1)}
    path = tmp_path_factory.mktemp("hipt") / "vit256_small_dino.pth"
    torch.save({"teacher": teacher, "student": {}, "epoch": 3}, path)
    return path, sd


def test_hipt_matches_a_plain_vit_forward(tiny, hipt_file):
    path, sd = hipt_file
    cond = make_conditioner(f"hipt:{path}", tiny)
    assert cond.dim == 384 and cond.name.startswith("hipt:") and len(cond.name) == len("hipt:") + 12
    gen = torch.Generator().manual_seed(1)
    for size in (256, 128):  # 128 px tiles are resized to 256 first
        rgb = torch.randint(0, 256, (2, 3, size, size), generator=gen, dtype=torch.uint8)
        with torch.no_grad():
            got, want = cond.embed(rgb, ["a", "b"]), reference_cls(sd, rgb)
        assert got.shape == (2, 384) and got.dtype == torch.float32
        assert float((got - want).abs().max() / want.abs().max()) < 1e-4
    # module and teacher wrappers both unwrap
    other = path.with_name("module.pth")
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in sd.items()}}, other)
    assert make_conditioner(f"hipt:{other}", tiny).name != cond.name


def test_hipt_with_wrong_keys_names_the_file(tiny, tmp_path):
    sd = dino_vit_s16()
    timm_like = {k.replace("attn.qkv", "attn.q"): v for k, v in sd.items()}
    path = tmp_path / "wrong.pth"
    torch.save({"teacher": timm_like}, path)
    with pytest.raises(ModelLoadError, match=r"wrong\.pth: not a DINO ViT-S/16 checkpoint: 24 keys missing.*blocks\.0\.attn\.qkv"):
        make_conditioner(f"hipt:{path}", tiny)


# --- precomputed --------------------------------------------------------------

IDS = ["s1/0_0", "s1/0_256", "s2/512_0"]


def _embeddings(dim=384):
    return np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32)


def write_npy_structured(path, emb):
    arr = np.zeros(3, dtype=[("tile_id", "U16"), ("embedding", "f4", (emb.shape[1],))])
    arr["tile_id"], arr["embedding"] = IDS, emb
    np.save(path, arr)


def write_npy_sidecar(path, emb):
    np.save(path, emb)
    path.with_name(path.stem + ".tile_ids.txt").write_text("\n".join(IDS) + "\n")


def write_zarr(path, emb):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    ids = group.create_array("tile_id", shape=(len(IDS),), dtype=str)
    ids[:] = np.array(IDS, dtype=object)
    group.create_array("embedding", data=emb)


def write_h5(path, emb):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f["tile_id"] = np.array(IDS, dtype="S")
        f["embedding"] = emb


@pytest.mark.parametrize("writer,name", [(write_npy_structured, "e.npy"), (write_npy_sidecar, "e.npy"),
                                         (write_zarr, "e.zarr"), (write_h5, "e.h5")])
def test_precomputed_formats(tiny, tmp_path, writer, name):
    emb = _embeddings()
    writer(tmp_path / name, emb)
    cond = make_conditioner(f"precomputed:{tmp_path / name}", tiny)
    assert cond.dim == 384 and cond.name.startswith("precomputed:")
    rgb = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    out = cond.embed(rgb, [IDS[2], IDS[0]])
    assert out.dtype == torch.float32 and np.array_equal(out.numpy(), emb[[2, 0]])
    with pytest.raises(InputError, match=rf"{name}: no embedding for tile id\(s\) \['s9/0_0'\]"):
        cond.embed(rgb, [IDS[0], "s9/0_0"])


def test_precomputed_identity_follows_content(tiny, tmp_path):
    emb = _embeddings()
    write_npy_structured(tmp_path / "a.npy", emb)
    write_npy_structured(tmp_path / "b.npy", emb + 1)
    a = make_conditioner(f"precomputed:{tmp_path / 'a.npy'}", tiny).name
    assert a != make_conditioner(f"precomputed:{tmp_path / 'b.npy'}", tiny).name
    write_npy_structured(tmp_path / "c.npy", emb)
    assert a == make_conditioner(f"precomputed:{tmp_path / 'c.npy'}", tiny).name


def test_precomputed_bad_files(tiny, tmp_path):
    np.save(tmp_path / "plain.npy", _embeddings())
    with pytest.raises(ModelLoadError, match=r"plain\.npy: a plain array needs its tile ids in plain\.tile_ids\.txt"):
        make_conditioner(f"precomputed:{tmp_path / 'plain.npy'}", tiny)
    write_npy_structured(tmp_path / "small.npy", _embeddings(dim=8))
    with pytest.raises(ConfigError, match="small.npy: embeddings have 8 dimensions, model tiny-v1 expects 384"):
        make_conditioner(f"precomputed:{tmp_path / 'small.npy'}", tiny)
    arr = np.zeros(2, dtype=[("id", "U4"), ("embedding", "f4", (384,))])
    np.save(tmp_path / "keys.npy", arr)
    with pytest.raises(ModelLoadError, match=r"keys\.npy: structured array needs fields 'tile_id' and 'embedding', has \['id', 'embedding'\]"):
        make_conditioner(f"precomputed:{tmp_path / 'keys.npy'}", tiny)
    with pytest.raises(ModelLoadError, match="gone.h5: precomputed embeddings file not found"):
        make_conditioner(f"precomputed:{tmp_path / 'gone.h5'}", tiny)
    with pytest.raises(ModelLoadError, match="unsupported embeddings file"):
        make_conditioner(f"precomputed:{tmp_path / 'e.csv'}", tiny)
    write_npy_sidecar(tmp_path / "dup.npy", _embeddings())
    (tmp_path / "dup.tile_ids.txt").write_text("a\na\nb\n")
    with pytest.raises(ModelLoadError, match="dup.npy: tile ids are not unique"):
        make_conditioner(f"precomputed:{tmp_path / 'dup.npy'}", tiny)
