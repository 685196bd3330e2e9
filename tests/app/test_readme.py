"""Every `pathsegdiff` command of the README's real workflow runs, as written, on stand-ins.

The stand-ins sit where the README says the real files go: a small random
CompVis log dir with the reference model's conditioning (HIPT 384-d patch and
768-d region embeddings) at ``models/brca20x``, random DINO ViT-S/16 weights
at ``models/vit256_small_dino.pth``, tiny BCSS and GlaS folders cut from real
H&E images, a copy of the bundled slide, and a loopback S3 server with the
bucket ``lab-bucket``.  Two substitutions: ``--device cuda`` runs on the CPU,
and training runs 1 epoch (the commands are what is tested, not the fit).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from helpers.compvis import UNET_YAML, write_log_dir
from helpers.dino import dino_vit_s16
from helpers.slides import write_slide_crop
from pathsegdiff.cli import app

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
runner = CliRunner()


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The real workflow") : text.index("## The feature store")]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("pathsegdiff ")]


def make_models(root: Path) -> None:
    ldm = root / "models" / "brca20x"
    # Attention at the coarsest level only: the same code path, a fraction of the CPU time.
    write_log_dir(ldm, {**UNET_YAML, "attention_resolutions": [4]}, heads=[1, 1, 1])
    # The reference's SSLEmbedder: 384-d HIPT patch and 768-d region embeddings.
    cfg_path = next((ldm / "configs").glob("*-project.yaml"))
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"]["params"]["cond_stage_config"]["params"].update(patch_embed_dim=384, region_embed_dim=768)
    cfg_path.write_text(yaml.safe_dump(cfg))
    ckpt = torch.load(ldm / "checkpoints" / "last.ckpt", weights_only=True)
    gen = torch.Generator().manual_seed(5)
    ctx = ckpt["state_dict"]["cond_stage_model.patch_fc.bias"].shape[0]
    ckpt["state_dict"]["cond_stage_model.patch_fc.weight"] = torch.randn(ctx, 384, generator=gen) / 20
    ckpt["state_dict"]["cond_stage_model.region_fc.weight"] = torch.randn(ctx, 768, generator=gen) / 28
    torch.save(ckpt, ldm / "checkpoints" / "last.ckpt")
    teacher = {f"backbone.{k}": v for k, v in dino_vit_s16().items()}
    torch.save({"teacher": teacher}, root / "models" / "vit256_small_dino.pth")


def make_data(root: Path) -> None:
    he = Image.open(DATA / "target_image.png").convert("RGB")
    rng = np.random.default_rng(0)
    bcss = root / "data" / "BCSS"
    (bcss / "rgbs_colorNormalized").mkdir(parents=True)
    (bcss / "masks").mkdir()
    # Three training institutions and one test institution (OL); 0.25 um/px, halved to 0.5.
    for k, site in enumerate(("A1", "A2", "B6", "OL")):
        name = f"TCGA-{site}-A0SK-DX1_xmin{1000 * k}_ymin2000_MPP-0.2500.png"
        he.crop((0, 200 * k, 512, 200 * k + 1024)).save(bcss / "rgbs_colorNormalized" / name)
        codes = np.repeat(np.repeat(rng.integers(0, 22, (8, 4)), 128, 0), 128, 1).astype(np.uint8)
        Image.fromarray(codes).save(bcss / "masks" / name)
    glas = root / "data" / "GlaS"
    glas.mkdir(parents=True)
    for name, box in (("train_1", (0, 0)), ("train_2", (300, 0)), ("train_3", (0, 300)), ("testA_1", (600, 600))):
        he.crop((*box, box[0] + 256, box[1] + 256)).convert("RGB").save(glas / f"{name}.bmp")
        inst = np.zeros((256, 256), np.uint8)
        inst[20:100, 30:120], inst[150:230, 100:200] = 1, 2
        Image.fromarray(inst).save(glas / f"{name}_anno.bmp")
    write_slide_crop(root / "data" / "slide.svs")  # a 768 px pyramidal crop of the bundled slide


@pytest.fixture
def workspace(tmp_path, monkeypatch, s3_server):
    import s3fs

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(k, v)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    if not fs.exists("lab-bucket"):
        fs.mkdir("lab-bucket")
    s3fs.S3FileSystem.clear_instance_cache()
    make_models(tmp_path)
    make_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_lists_the_workflow():
    verbs = {shlex.split(c)[1] for c in readme_commands()}
    assert {"extract", "train", "evaluate", "predict", "store"} <= verbs


def test_every_readme_workflow_command_runs(workspace):
    import time

    for command in readme_commands():
        argv = shlex.split(command.replace("--device cuda", "--device cpu"))[1:]
        if argv[0] in ("extract", "train"):
            argv.append("--quiet")
        if argv[0] == "train":
            argv += ["--epochs", "1"]
        t = time.perf_counter()
        r = runner.invoke(app, argv)
        print(f"{time.perf_counter() - t:6.1f} s  {command}")
        assert r.exit_code == 0, f"{command}\n{r.output}"
    assert (workspace / "bcss.zip").is_file()
    assert (workspace / "predictions" / "slide" / "regions.geojson").is_file()
