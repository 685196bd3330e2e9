"""The model commands: pretrain, cluster, convert."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import Quiet, StoreBlocks, StoreTimesteps, app, convert_app, guarded, split_list


@app.command("pretrain")
@guarded
def pretrain_cmd(
    sources: Annotated[list[str], typer.Argument(help="Unlabeled tiles: image folders, slides, cohort manifests or slide folders, or stores (their RGB).", metavar="SOURCE")],
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Model directory to write (a diffusers folder plus ssl_projection/); rerun to resume.")],
    mpp: Annotated[list[float] | None, typer.Option("--mpp", metavar="MPP", help="Slides: tile at this resolution, um/px; repeat for several magnifications.")] = None,
    tile_size: Annotated[int, typer.Option(metavar="TILE_SIZE", help="Tile size, px, cut from each source.")] = 256,
    stride: Annotated[int | None, typer.Option(metavar="STRIDE", help="Tile stride, px (default: the tile size).")] = None,
    min_tissue: Annotated[float, typer.Option(metavar="MIN_TISSUE", help="Slides: tissue fraction a tile needs.")] = 0.5,
    crop: Annotated[int, typer.Option(metavar="CROP", help="Training crops, px (a multiple of 16; the UNet is convolutional).")] = 128,
    conditioning: Annotated[str, typer.Option(metavar="CONDITIONING", help="null | hipt:PATH | precomputed:PATH, as extract's --conditioning; extract loads the model with the same.")] = "null",
    ae_steps: Annotated[int, typer.Option(metavar="AE_STEPS", help="Autoencoder (stage 1) optimizer steps.")] = 2000,
    unet_steps: Annotated[int, typer.Option(metavar="UNET_STEPS", help="UNet (stage 2) optimizer steps.")] = 10000,
    ae_minutes: Annotated[float | None, typer.Option(metavar="AE_MINUTES", help="Stage 1 ends after this many minutes of training, whatever its steps.")] = None,
    unet_minutes: Annotated[float | None, typer.Option(metavar="UNET_MINUTES", help="Stage 2 ends after this many minutes of training, whatever its steps.")] = None,
    batch_size: Annotated[int, typer.Option(metavar="BATCH_SIZE", help="UNet crops per step (the autoencoder takes half).")] = 16,
    grad_accum: Annotated[int, typer.Option(metavar="GRAD_ACCUM", help="Gradient accumulation steps per optimizer step.")] = 1,
    checkpoint_every: Annotated[int, typer.Option(metavar="CHECKPOINT_EVERY", help="Steps between checkpoints (a killed run loses at most these).")] = 100,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the crops, noise and weights.")] = 0,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="cpu or cuda (bf16 autocast on cuda).")] = "cpu",
    threads: Annotated[int | None, typer.Option(metavar="THREADS", help="Torch threads (default: torch's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier pretrain output in OUT (never other files).")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a conditioned latent diffusion model on unlabeled tiles (autoencoder, then UNet); resumable."""
    import sys
    from dataclasses import replace as _replace

    from pathsegdiff.extract.pretrain import PretrainConfig, pretrain_paths
    from pathsegdiff.tiles.datasets import SourceConfig

    base = PretrainConfig()
    config = PretrainConfig(
        autoencoder=_replace(base.autoencoder, steps=ae_steps, batch_size=max(1, batch_size // 2),
                             grad_accum=grad_accum, checkpoint_every=checkpoint_every),
        unet=_replace(base.unet, steps=unet_steps, batch_size=batch_size, grad_accum=grad_accum,
                      checkpoint_every=checkpoint_every),
        crop=crop, conditioning=conditioning, seed=seed, device=device, threads=threads)
    tiling = [SourceConfig(tile_size=tile_size, stride=stride, target_mpp=m, min_tissue=min_tissue)
              for m in (mpp or [None])]
    budget = {k: v for k, v in (("autoencoder", ae_minutes), ("unet", unet_minutes)) if v is not None}
    r = pretrain_paths(sources, out, config, tiling, overwrite=overwrite, budget_minutes=budget or None,
                       progress=not quiet, command=" ".join(sys.argv), echo=typer.echo)
    typer.echo(r.line())


@app.command("cluster")
@guarded
def cluster_cmd(
    stores: Annotated[list[str], typer.Argument(help="Stores (a directory, a .zip or a URL); several are read as one: same features.", metavar="STORE")],
    out: Annotated[str, typer.Option("-o", "--out", metavar="DIR", help="Output folder: centroids, per-tile maps, an overlay and QuPath GeoJSON per slide, summary.json (refused if it holds anything but an earlier cluster output).")],
    k: Annotated[int, typer.Option("-k", metavar="K", help="Clusters (kmeans) or concepts (nmf), 2 to 254.")] = 3,
    method: Annotated[str, typer.Option(metavar="kmeans|nmf", help="kmeans (streaming MiniBatchKMeans) or nmf (MiniBatchNMF concepts of the standardised features split into positive and negative parts).")] = "kmeans",
    blocks: StoreBlocks = None,
    timesteps: StoreTimesteps = None,
    size: Annotated[int | None, typer.Option(metavar="PX", help="Map side in pixels per tile (default: the finest selected block's); blocks are resized to it.")] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the tile order, the pixels drawn and the initialisation.")] = 0,
    fit_pixels: Annotated[int, typer.Option(metavar="N", help="Pixels drawn per tile to fit on (0: all); every pixel is assigned afterwards.")] = 1024,
    batch_tiles: Annotated[int, typer.Option(metavar="N", help="Tiles per partial_fit step.")] = 8,
    passes: Annotated[int, typer.Option(metavar="N", help="Fitting passes over the tiles.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier cluster output in --out.")] = False,
    quiet: Quiet = False,
) -> None:
    """An unsupervised tissue map from the stored features (k-means or NMF, no labels, no model)."""
    from pathsegdiff.cluster import ClusterConfig, cluster_stores, summary_line

    cfg = ClusterConfig(k=k, method=method, blocks=split_list(blocks), timesteps=split_list(timesteps, int),
                        size=size, seed=seed, fit_pixels=fit_pixels, batch_tiles=batch_tiles, passes=passes)
    summary = cluster_stores(stores, out, cfg, overwrite=overwrite, progress=not quiet, echo=typer.echo)
    typer.echo(summary_line(summary, out))




@convert_app.command("timm-vit")
@guarded
def convert_timm_vit_cmd(
    checkpoint: Annotated[str, typer.Argument(metavar="CHECKPOINT", help="A timm-layout ViT checkpoint as published (UNI's or UNI-2h's pytorch_model.bin, or a .safetensors file), or the downloaded folder holding it.")],
    arch: Annotated[str, typer.Option(metavar="uni|uni2-h", help="uni (ViT-L/16, as MahmoodLab/UNI) or uni2-h (ViT-H/14 with SwiGLU and 8 register tokens, as MahmoodLab/UNI2-h).")],
    out: Annotated[str, typer.Option("-o", "--out", metavar="DIR", help="Folder to write: config.json, model.safetensors, preprocessor_config.json (pass it to extract --model).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier conversion in --out (nothing else is ever replaced).")] = False,
) -> None:
    """Convert a UNI / UNI-2h checkpoint (timm layout) into the transformers DINOv2 folder the ViT family loads."""
    from pathsegdiff.extract.backbones.convert_timm import convert_timm_vit

    folder = convert_timm_vit(checkpoint, arch, out, overwrite=overwrite)
    typer.echo(f"{folder}: converted from {checkpoint} ({arch}); extract with --model {folder}")
