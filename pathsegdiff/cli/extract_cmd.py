"""``pathsegdiff extract``: run the model once per tile and fill a store."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import Device, Quiet, app, guarded, split_list


# --- extract -----------------------------------------------------------------
@app.command("extract")
@guarded
def extract_cmd(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Image folder (images/ + masks/), dataset root (--dataset), image or slide file, a folder of slides, or a CSV manifest of slides (columns slide, annotations, split, patient, mpp).")],
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Store to create or resume (directory or s3:// URL).")],
    model: Annotated[str, typer.Option(metavar="MODEL", help="A model directory, he-tiny (the tiny UNet LDM trained on the bundled CC0 H&E slide), or a seeded untrained model for tests: tiny (UNet LDM), tiny-dit (diffusion transformer), tiny-vit (ViT foundation model).")] = "tiny",
    dataset: Annotated[str, typer.Option(metavar="DATASET", help="auto, folder, bcss, glas or slide.")] = "auto",
    timesteps: Annotated[str | None, typer.Option(metavar="TIMESTEPS", help="Comma-separated diffusion timesteps (default: 50,150; 0 for a ViT).")] = None,
    blocks: Annotated[str | None, typer.Option(metavar="BLOCKS", help="Comma-separated blocks (default: the model's). A UNet's: mid, up0.pre, up0, up1, ...; a DiT's: block0..; a ViT's: layer0.. (docs/architecture.md).")] = None,
    draws: Annotated[int, typer.Option(metavar="DRAWS", help="Noise draws averaged per timestep.")] = 1,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Global noise seed (per-tile noise derives from it).")] = 0,
    conditioning: Annotated[str, typer.Option(metavar="CONDITIONING", help="null | hipt:PATH (vit256_small_dino.pth) | precomputed:PATH.")] = "null",
    batch_size: Annotated[int, typer.Option(metavar="BATCH_SIZE", help="Tiles per model batch.")] = 8,
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option(metavar="DTYPE", help="Compute dtype: fp32, bf16 or fp16 (the store holds float16).")] = "fp32",
    codec: Annotated[str, typer.Option(metavar="CODEC", help="Feature codec: none, lz4, zstd, bitround7-zstd (lossy).")] = "none",
    tile_size: Annotated[int, typer.Option(metavar="TILE_SIZE", help="Tile size in pixels.")] = 256,
    stride: Annotated[int | None, typer.Option(metavar="STRIDE", help="Tile stride in pixels (default: the tile size).")] = None,
    mpp: Annotated[float | None, typer.Option(metavar="MPP", help="Target resolution in um/px (slides and BCSS default to 0.5, images keep theirs).")] = None,
    source_mpp: Annotated[float | None, typer.Option(metavar="SOURCE_MPP", help="Resolution of the input in um/px, when its files do not record it.")] = None,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="Split of every tile of a plain folder or slide: train, val, test or empty.")] = "",
    origin: Annotated[str, typer.Option(metavar="ORIGIN", help="real, or synthetic: SOURCE is a folder of generated tiles with their masks (images/ + masks/), training tiles only (never val or test), into a new store or added to a store of real tiles (docs/synthetic.md).")] = "real",
    min_tissue: Annotated[float, typer.Option(metavar="MIN_TISSUE", help="Slides: tissue fraction a tile needs; a tile holding annotated pixels is kept whatever its tissue (annotated glass included).")] = 0.5,
    classes: Annotated[str | None, typer.Option(metavar="CLASSES", help="Comma-separated class names when there is no classes.txt.")] = None,
    annotations: Annotated[str | None, typer.Option(metavar="ANNOTATIONS", help="One slide's annotations: QuPath GeoJSON or a label mask (a cohort lists them in its manifest).")] = None,
    unknown_classes: Annotated[str, typer.Option(metavar="UNKNOWN_CLASSES", help="An annotation class not in the class names: refuse, or ignore (its pixels become the ignore index).")] = "refuse",
    annotated_only: Annotated[bool, typer.Option("--annotated-only", help="Slides: extract only tiles with annotated pixels.")] = False,
    decode_workers: Annotated[int | None, typer.Option(metavar="DECODE_WORKERS", help="Decode worker processes (default: 0 on 2 cores, else up to 4).")] = None,
    threads: Annotated[int | None, typer.Option(metavar="THREADS", help="Torch CPU threads (default: torch's own); CPU features depend on it in their last bits.")] = None,
    scheduler: Annotated[str | None, typer.Option(metavar="SCHEDULER", help="Run on the dask.distributed cluster of this scheduler (tcp://host:8786).")] = None,
    workers: Annotated[int | None, typer.Option(metavar="WORKERS", help="Run on a local dask cluster of this many worker processes (one per GPU with --device cuda).")] = None,
    shard_tiles: Annotated[int, typer.Option(metavar="SHARD_TILES", help="Tiles per shard object of each array (1: one object per tile; more for object stores).")] = 1,
    limit: Annotated[int | None, typer.Option(metavar="LIMIT", help="Extract at most this many tiles in this run (a new pcaK store computes its calibration tiles first, even past the limit).")] = None,
    skip_errors: Annotated[bool, typer.Option("--skip-errors", help="Record unreadable tiles (and a cohort's unusable slides) and go on.")] = False,
    store_latent: Annotated[bool, typer.Option("--store-latent", help="Also store the VAE latent z0.")] = False,
    compact: Annotated[str, typer.Option(metavar="COMPACT", help="Feature encoding: float16 (default), int8 (2x fewer bytes), pcaK or pcaK-int8 (K principal components per block, e.g. pca64-int8; bases fitted on calibration tiles). See the README's 'Compact stores'.")] = "float16",
    calibration_tiles: Annotated[int, typer.Option(metavar="CALIBRATION_TILES", help="pcaK presets: tiles, spread over the slides, the bases are fitted on.")] = 32,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (inductor), channels-last; features within 1e-4 relative of eager; eager with one warning line if compiling fails.")] = False,
    vit_input_size: Annotated[int | None, typer.Option("--vit-input-size", metavar="VIT_INPUT_SIZE", help="ViT models: resize each tile to this many px (a multiple of the patch size, e.g. 224) instead of the largest multiple not above the tile (252 for 256 px tiles at patch 14).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store instead of resuming it.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run the model once per tile and fill (or resume) a feature store."""
    import os

    from pathsegdiff.tiles.datasets import SourceConfig, open_source
    from pathsegdiff.extract.featurize import FeatureConfig
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction

    cluster = None
    if scheduler is not None or workers is not None:
        from pathsegdiff.extract.run.cluster import ClusterConfig

        cluster = ClusterConfig(scheduler=scheduler, workers=workers)
        source = os.path.abspath(source)  # workers may run in another directory
    src = open_source(source, SourceConfig(dataset=dataset, tile_size=tile_size, stride=stride, target_mpp=mpp,
                                           mpp=source_mpp, class_names=split_list(classes), split=split,
                                           min_tissue=min_tissue, annotations=annotations,
                                           unknown_classes=unknown_classes, annotated_only=annotated_only,
                                           skip_errors=skip_errors, progress=not quiet, origin=origin))
    feats = FeatureConfig(blocks=split_list(blocks), timesteps=split_list(timesteps, int), draws=draws, seed=seed,
                          input_size=vit_input_size)
    cfg = ExtractConfig(model=model, conditioning=conditioning, features=feats, batch_size=batch_size,
                        device=device, dtype=dtype, codec=codec, decode_workers=decode_workers, threads=threads,
                        shard_tiles=shard_tiles, limit=limit, skip_errors=skip_errors, overwrite=overwrite,
                        store_latent=store_latent, compile=compile, compact=compact,
                        calibration_tiles=calibration_tiles)
    if cluster is not None:
        from pathsegdiff.extract.run.distributed import run_distributed

        summary = run_distributed(src, out, cfg, cluster, progress=not quiet, echo=typer.echo)
    else:
        summary = run_extraction(src, out, cfg, progress=not quiet, echo=typer.echo)
    typer.echo(summary.line())
    for tile_id, reason in list(summary.failed.items())[:20]:
        typer.echo(f"  skipped {tile_id}: {reason}", err=True)
