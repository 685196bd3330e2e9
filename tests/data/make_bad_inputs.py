"""Write a corpus of bad inputs into a directory: damaged images, odd image modes, bad masks, configs, checkpoints.

    python tests/data/make_bad_inputs.py OUT_DIR

Nothing here is committed as a binary: the tests run this script into a
temporary directory.  It writes ``OUT_DIR/manifest.json``: for every input its
kind (image, mask_folder, model_dir, store_like) and what the tool must do
with it: ``refuse`` (one clear error naming the file) or ``accept`` (an
ordinary image in an unusual mode, converted to 8-bit RGB).  The malicious
checkpoints would each create ``OUT_DIR/MARKER-<name>.npy`` if they were ever
unpickled with code execution; the tests check that no marker appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).parent
SIZE = (128, 128)  # (width, height): one tile of the tests' 128 px heads


def base_rgb() -> Image.Image:
    """A crop of a real H&E image shipped beside this script (tiatoolbox's target_image.png)."""
    return Image.open(HERE / "target_image.png").convert("RGB").crop((400, 300, 400 + SIZE[0], 300 + SIZE[1]))


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for what Pillow will not write (16-bit RGB, a lying header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


# -- images --------------------------------------------------------------------
def images(out: Path) -> dict[str, dict]:
    d = out / "images"
    d.mkdir(parents=True, exist_ok=True)
    rgb = base_rgb()
    made: dict[str, dict] = {}

    def put(name: str, data: bytes, expect: str, why: str) -> None:
        (d / name).write_bytes(data)
        made[f"images/{name}"] = {"kind": "image", "expect": expect, "why": why}

    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif")):
        full = encoded(rgb, fmt)
        put(f"truncated.{ext}", full[: len(full) * 6 // 10], "refuse", f"{fmt} cut at 60 % of its bytes")
        put(f"empty.{ext}", b"", "refuse", "zero-byte file")
    # Decompression bomb: a header declaring 100000 x 100000 px, a few hundred bytes on disk.
    put("bomb.png", raw_png(100_000, 100_000, 8, 2, b"\x00" * 301), "refuse", "declares 10^10 pixels")
    # 16-bit RGB: Pillow would silently drop the low byte; the tool must refuse, not guess a scaling.
    a16 = (np.asarray(rgb).astype(np.uint16) * 257).astype(">u2")
    rows = b"".join(b"\x00" + a16[y].tobytes() for y in range(SIZE[1]))
    put("rgb16.png", raw_png(SIZE[0], SIZE[1], 16, 2, rows), "refuse", "16 bits per channel RGB")
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, a16.astype(np.uint16), photometric="rgb")
    put("rgb16.tif", buf.getvalue(), "refuse", "16 bits per channel RGB TIFF")
    put("gray.png", encoded(rgb.convert("L"), "PNG"), "refuse", "grayscale, not H&E colour")
    put("gray16.png", encoded(Image.fromarray(a16[..., 0].astype(np.uint16)), "PNG"), "refuse", "16-bit grayscale")
    put("not_an_image.png", b"hello, this is text with a .png name\n", "refuse", "text named .png")
    put("palette.png", encoded(rgb.quantize(64), "PNG"), "accept", "palette image, expanded to RGB")
    put("cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG"), "accept", "CMYK JPEG, converted to RGB")
    put("rgba.png", encoded(rgb.convert("RGBA"), "PNG"), "accept", "opaque alpha channel, dropped")
    return made


# -- masks (image folders for the extract verb) ----------------------------------
def mask_folders(out: Path) -> dict[str, dict]:
    made: dict[str, dict] = {}
    rgb = base_rgb()
    h, w = SIZE[1], SIZE[0]
    cases = {
        "mask_out_of_range": (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8),
        "mask_wrong_size": np.zeros((h // 2, w // 2), np.uint8),
        "mask_in_colour": None,
    }
    cases["mask_out_of_range"][10:20, 10:20] = 7  # class 7 of a 3-class folder (and not the ignore value)
    for name, mask in cases.items():
        root = out / "folders" / name
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        (root / "classes.txt").write_text("background\nnuclei\nstroma\n")
        rgb.save(root / "images" / "a.png")
        if mask is None:
            rgb.save(root / "masks" / "a.png")  # an RGB picture where a class-index mask belongs
        else:
            Image.fromarray(mask).save(root / "masks" / "a.png")
        made[f"folders/{name}"] = {"kind": "mask_folder", "expect": "refuse", "why": name.replace("_", " ")}
    return made


# -- model directories -------------------------------------------------------------
UNET = dict(image_size=8, in_channels=3, out_channels=3, model_channels=32, attention_resolutions=[2, 4],
            num_res_blocks=2, channel_mult=[1, 2, 3], num_heads=1, use_spatial_transformer=True,
            transformer_depth=1, context_dim=16)
VQ = dict(embed_dim=3, n_embed=16, ddconfig=dict(double_z=False, z_channels=3, resolution=32, in_channels=3, out_ch=3,
          ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0))


def project_yaml() -> dict:
    """A LatentDiffusion config the loader accepts (the shape of the reference model's, tiny)."""
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "conditioning_key": "crossattn",
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": UNET},
        "first_stage_config": {"target": "ldm.models.autoencoder.VQModelInterface", "params": VQ},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.SSLEmbedder", "params": {
            "patch_embed_dim": 24, "region_embed_dim": 12}}}}}


class RunsShell:
    """Unpickling this runs a shell command (os.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class RunsPython:
    """Unpickling this runs Python source (builtins.exec)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class TouchesWithProtocol4:
    """Unpickling this calls pathlib.Path.touch, reached by a protocol-4 STACK_GLOBAL."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class SavesThroughAllowedPrefix:
    """Unpickling this calls numpy.save: a module the Lightning allow-list names, a function that writes a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (np.save, (str(self.marker), [1, 2, 3]))


def model_dirs(out: Path) -> dict[str, dict]:
    import torch

    made: dict[str, dict] = {}
    good_yaml = yaml.safe_dump(project_yaml())
    weights = {"model.diffusion_model.conv_in.weight": torch.zeros(32, 3, 3, 3)}

    def put(name: str, yaml_text: str | None, ckpt: bytes | None, why: str, marker: bool = False) -> None:
        root = out / "models" / name
        (root / "configs").mkdir(parents=True, exist_ok=True)
        (root / "checkpoints").mkdir(exist_ok=True)
        if yaml_text is not None:
            (root / "configs" / "2024-01-01T00-00-00-project.yaml").write_text(yaml_text)
        if ckpt is not None:
            (root / "checkpoints" / "last.ckpt").write_bytes(ckpt)
        made[f"models/{name}"] = {"kind": "model_dir", "expect": "refuse", "why": why,
                                  **({"marker": f"MARKER-{name}.npy"} if marker else {})}

    def torch_bytes(obj, protocol: int = 2) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, pickle_protocol=protocol)
        return buf.getvalue()

    valid_ckpt = torch_bytes({"state_dict": weights})
    put("yaml_not_a_model_config", yaml.safe_dump({"services": {"web": {"image": "nginx"}}}), valid_ckpt,
        "YAML, but a docker-compose file")
    put("yaml_a_list", yaml.safe_dump(["model", "params"]), valid_ckpt, "YAML list, not a mapping")
    put("yaml_broken", "model: {target: [unclosed\n  params: :\n", valid_ckpt, "not valid YAML")
    put("yaml_empty", "", valid_ckpt, "empty YAML file")
    put("ckpt_not_a_checkpoint", good_yaml, np.random.default_rng(0).bytes(4096), "random bytes named last.ckpt")
    put("ckpt_empty", good_yaml, b"", "zero-byte checkpoint")
    put("ckpt_text", good_yaml, b"this is not a checkpoint\n" * 10, "text named last.ckpt")
    put("ckpt_truncated", good_yaml, valid_ckpt[: len(valid_ckpt) // 2], "torch zip cut in half")
    put("ckpt_no_weights", good_yaml, torch_bytes({"epoch": 3, "global_step": 10}), "a checkpoint without state_dict")
    put("ckpt_missing", good_yaml, None, "configs/ without checkpoints/last.ckpt")
    for name, obj, protocol, what in (
        ("malicious_os_system", RunsShell, 2, "os.system"),
        ("malicious_exec", RunsPython, 2, "builtins.exec"),
        ("malicious_protocol4", TouchesWithProtocol4, 4, "pathlib.Path.touch via pickle protocol 4"),
        ("malicious_allowlisted_module", SavesThroughAllowedPrefix, 2, "numpy.save (a module on the allow-list)"),
    ):
        payload = obj(out / f"MARKER-{name}.npy")  # numpy.save keeps a name that already ends in .npy
        put(name, good_yaml, torch_bytes({"state_dict": weights, "callbacks": payload}, protocol),
            f"torch checkpoint whose pickle calls {what}", marker=True)
    payload = RunsShell(out / "MARKER-malicious_plain_pickle.npy")
    put("malicious_plain_pickle", good_yaml, pickle.dumps({"state_dict": payload}, protocol=2),
        "a plain (non-zip) pickle that runs a shell command", marker=True)
    return made


# -- things that are not stores ------------------------------------------------------
def store_likes(out: Path) -> dict[str, dict]:
    d = out / "not_stores"
    d.mkdir(parents=True, exist_ok=True)
    made: dict[str, dict] = {}
    with zipfile.ZipFile(d / "text.zip", "w") as zf:
        zf.writestr("readme.txt", "not a store")
    made["not_stores/text.zip"] = {"kind": "store_like", "expect": "refuse", "why": "a zip of a text file"}
    (d / "broken.zip").write_bytes(b"PK\x03\x04 and then nothing a zip reader wants")
    made["not_stores/broken.zip"] = {"kind": "store_like", "expect": "refuse", "why": "PK magic, not a zip"}
    (d / "empty_dir").mkdir(exist_ok=True)
    made["not_stores/empty_dir"] = {"kind": "store_like", "expect": "refuse", "why": "an empty directory"}
    (d / "photos").mkdir(exist_ok=True)
    base_rgb().save(d / "photos" / "a.png")
    made["not_stores/photos"] = {"kind": "store_like", "expect": "refuse", "why": "a directory of images"}
    (d / "zarr_json_garbage.zarr").mkdir(exist_ok=True)
    (d / "zarr_json_garbage.zarr" / "zarr.json").write_bytes(b"\xff\xfe{{{")
    made["not_stores/zarr_json_garbage.zarr"] = {"kind": "store_like", "expect": "refuse", "why": "zarr.json not JSON"}
    (d / "zarr_v2.zarr").mkdir(exist_ok=True)
    (d / "zarr_v2.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    made["not_stores/zarr_v2.zarr"] = {"kind": "store_like", "expect": "refuse", "why": "a zarr v2 group"}
    return made


def make_bad_inputs(out: str | os.PathLike) -> dict[str, dict]:
    """Write the corpus into ``out``; returns (and writes as manifest.json) path -> {kind, expect, why}."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**images(out), **mask_folders(out), **model_dirs(out), **store_likes(out)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path, info in make_bad_inputs(sys.argv[1]).items():
        print(f"{info['expect']:7} {info['kind']:11} {path}: {info['why']}")
