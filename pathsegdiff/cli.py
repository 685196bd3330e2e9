"""The ``pathsegdiff`` command line: one library call per command.

Expected errors (:class:`PathsegdiffError`) print one line and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pathsegdiff.errors import PathsegdiffError, RemoteStoreError

app = typer.Typer(
    name="pathsegdiff",
    help="Cache diffusion-model features of pathology tiles in a Zarr store; train segmentation heads from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: typer's rich panels print on/off flags as "--json <bool>"
)
store_app = typer.Typer(help="Inspect (info, ls), verify, copy, pack and compact feature stores.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(store_app, name="store")

_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from pathsegdiff import __version__

        typer.echo(f"pathsegdiff {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for expected errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    _state["debug"] = debug


def fail(err: BaseException) -> None:
    """Print an expected error on one line and exit 1 (or re-raise under --debug)."""
    if _state["debug"]:
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


def guarded(fn):
    """Wrap a command so that PathsegdiffError becomes one line and exit code 1."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PathsegdiffError as e:
            fail(e)
        except Exception as e:  # a remote store's client (botocore, aiohttp) raises its own errors, not OSError
            from pathsegdiff.store.backend.location import is_remote_client_error, redact

            if not is_remote_client_error(e):
                raise
            fail(RemoteStoreError(f"remote store: {type(e).__name__}: {redact(e)}"))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return run


def split_list(value: str | None, cast=str) -> tuple | None:
    """Parse a comma-separated option ("50,150") into a tuple; None stays None."""
    if value is None or value == "":
        return None
    try:
        return tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        from pathsegdiff.errors import ConfigError

        raise ConfigError(f"cannot parse {value!r} as a comma-separated list") from None


# --- store -------------------------------------------------------------------
# Options several commands share, defined once.
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="cpu or cuda.")]
StoreBlocks = Annotated[str | None, typer.Option(metavar="BLOCKS", help="Comma-separated blocks; default: every block in the store.")]
StoreTimesteps = Annotated[str | None, typer.Option(metavar="TIMESTEPS", help="Comma-separated timesteps; default: all in the store.")]


StoreArg = Annotated[str, typer.Argument(metavar="STORE", help="Store: a directory, a .zip made by 'store pack', or a URL (s3://...).")]


@store_app.command("info")
@guarded
def store_info_cmd(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    disk: Annotated[bool, typer.Option("--disk", help="Measure the bytes on disk (lists every object: slow for a big or remote store); without it they are estimated.")] = False,
) -> None:
    """Schema version, tile counts, blocks, timesteps, identity, provenance and size of a store."""
    import json

    from pathsegdiff.store.commands.info import format_info, store_info

    info = store_info(store, disk=disk)
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else format_info(info))


@store_app.command("verify")
@guarded
def store_verify_cmd(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    manifest: Annotated[bool, typer.Option("--manifest", help="Also check every object against MANIFEST.sha256.")] = False,
) -> None:
    """Read every written tile: checksums, missing chunks, shapes, NaN/inf. Exit 0 only if all is well."""
    import json

    from tqdm import tqdm

    from pathsegdiff.store.commands.verify import verify_store

    with tqdm(desc="verify", unit="tile-array", disable=as_json, leave=False) as bar:
        report = verify_store(store, progress=bar.update)
    if manifest:
        from pathsegdiff.store.commands.copy import check_manifest

        report.store_problems.extend(check_manifest(store))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line, err=True)
        n_bad = len(report.problems)
        verdict = "ok" if report.ok else f"FAILED: {n_bad} damaged tiles, {len(report.store_problems)} store problems"
        typer.echo(f"{report.location}: {report.n_checked} written tiles checked of {report.n_tiles}: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


@store_app.command("pack")
@guarded
def store_pack_cmd(
    store: Annotated[str, typer.Argument(metavar="STORE", help="Store directory to pack.")],
    out: Annotated[str, typer.Argument(metavar="OUT", help="Output .zip (uncompressed ZIP64, opens read-only in place).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Pack a store into one .zip that pathsegdiff and zarr open without unpacking."""
    from tqdm import tqdm

    from pathsegdiff.store.commands.pack import pack_store

    with tqdm(desc="pack", unit="B", unit_scale=True, leave=False) as bar:
        path = pack_store(store, out, overwrite=overwrite, progress=bar.update)
    typer.echo(f"packed {store} -> {path}")


@store_app.command("copy")
@guarded
def store_copy_cmd(
    src: StoreArg,
    dst: Annotated[str, typer.Argument(metavar="DST", help="Destination: a directory, a .zip, or a URL (s3://...).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
) -> None:
    """Copy a store byte for byte (dir, zip, s3), write MANIFEST.sha256, and verify the copy."""
    from tqdm import tqdm

    from pathsegdiff.store.commands.copy import copy_store

    with tqdm(desc="copy", unit="B", unit_scale=True, leave=False) as bar:
        n = copy_store(src, dst, overwrite=overwrite, progress=bar.update)
    typer.echo(f"copied {n / 2**20:,.1f} MiB {src} -> {dst}; manifest and verify ok")


@store_app.command("ls")
@guarded
def store_ls_cmd(
    store: StoreArg,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help="Only tiles with this status: todo, written, failed.")] = None,
    limit: Annotated[int, typer.Option(metavar="LIMIT", help="Print at most this many rows (0: all).")] = 50,
) -> None:
    """List the tile table: index, tile id, slide, x, y, split, status."""
    from pathsegdiff.store.commands.ls import format_rows, list_tiles

    typer.echo(format_rows(list_tiles(store, status, limit)))


@store_app.command("compact")
@guarded
def store_compact_cmd(
    src: StoreArg,
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="The compact store to write (a directory).")],
    compact: Annotated[str, typer.Option(metavar="COMPACT", help="int8, pcaK or pcaK-int8 (e.g. pca64-int8).")],
    calibration_tiles: Annotated[int, typer.Option(metavar="CALIBRATION_TILES", help="pcaK presets: written tiles, spread over the slides, the bases are fitted on.")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a compact copy of a finished, sound float16 store (labels, RGB and the tile table carried over)."""
    from pathsegdiff.store.commands.compact import compact_store
    from pathsegdiff.store.encodings import Calibration

    summary = compact_store(src, out, compact, Calibration(tiles=calibration_tiles), overwrite=overwrite,
                            progress=not quiet, echo=typer.echo)
    typer.echo(summary.line())


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
                                           skip_errors=skip_errors, progress=not quiet))
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



# --- train / evaluate --------------------------------------------------------

TrainStoreArg = Annotated[list[str], typer.Argument(metavar="STORE", help="Stores with features and labels (a directory, a .zip or a URL); several are read as one: same blocks, timesteps, features and classes.")]


@app.command("train")
@guarded
def train_cmd(
    stores: TrainStoreArg,
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Run directory to write (refused if it holds another run).")],
    head: Annotated[str, typer.Option(metavar="HEAD", help="Head: fcn, linear, mlp, rgb-fcn (fcn + the tile's stored RGB at full resolution), or your own nn.Module as path/to/heads.py:Class or package.module:Class (docs/heads.md); the run records its file's SHA-256.")] = "fcn",
    head_args: Annotated[str | None, typer.Option(metavar="HEAD_ARGS", help="The head's keyword arguments: a JSON object ('{\"width\": 64}') or a .json file; built-in heads take their own fields (fcn: proj_channels, hidden_channels, conv_layers; rgb-fcn also rgb_channels, rgb_layers; mlp: mlp_hidden, ensemble, pixels_per_tile).")] = None,
    blocks: StoreBlocks = None,
    timesteps: StoreTimesteps = None,
    epochs: Annotated[int, typer.Option(metavar="EPOCHS", help="Most epochs per run (early stopping may end sooner).")] = 30,
    batch_size: Annotated[int, typer.Option(metavar="BATCH_SIZE", help="Tiles per step.")] = 8,
    lr: Annotated[float, typer.Option(metavar="LR", help="AdamW learning rate (cosine schedule).")] = 1e-3,
    label_fraction: Annotated[str, typer.Option(metavar="LABEL_FRACTION", help="Train tiles used: a fraction (0.1), a percentage (10%) or a count (25).")] = "1",
    runs: Annotated[int, typer.Option(metavar="RUNS", help="Repeat with seeds seed..seed+runs-1; results give mean and std.")] = 1,
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of the first run.")] = 0,
    device: Device = "cpu",
    loss: Annotated[str, typer.Option(metavar="LOSS", help="ce (cross-entropy) or focal (focal loss, --focal-gamma).")] = "ce",
    focal_gamma: Annotated[float, typer.Option(metavar="FOCAL_GAMMA", help="Focal loss exponent: (1 - p)^gamma; 0 is cross-entropy.")] = 2.0,
    class_weights: Annotated[str | None, typer.Option(metavar="CLASS_WEIGHTS", help="Weight the loss per class: auto (inverse pixel frequencies of the training tiles, scaled to average 1 over the classes present) or one weight per class (1,3,1).")] = None,
    dice: Annotated[float, typer.Option(metavar="DICE", help="Weight of a soft Dice loss added to the loss.")] = 0.0,
    augment: Annotated[str, typer.Option(metavar="AUGMENT", help="d4: random quarter turns and flips of features, RGB and labels together (the default); none: tiles as stored. Diffusion features are not rotation-equivariant, so d4 is an approximation.")] = "d4",
    patience: Annotated[int, typer.Option(metavar="PATIENCE", help="Stop after this many epochs without a better val mIoU.")] = 8,
    loader_workers: Annotated[int, typer.Option(metavar="LOADER_WORKERS", help="DataLoader worker processes that read tiles.")] = 0,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Train on a store still being written even when a split the run evaluates on has no written tile yet (always said, and recorded in results.json).")] = False,
    coefficients: Annotated[bool, typer.Option("--coefficients", help="Train on a PCA store's coefficients (faster reads); the head is saved composed onto the store's features.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a segmentation head from the store alone; write RUN/results.json, summary.md and plots."""
    from pathsegdiff.errors import ConfigError
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.heads import parse_head_args
    from pathsegdiff.train_head.run import train
    from pathsegdiff.train_head.splits import parse_label_fraction

    if augment not in ("d4", "none"):
        raise ConfigError(f"--augment {augment!r}: choose d4 or none")
    config = TrainConfig(
        head=head, blocks=split_list(blocks), timesteps=split_list(timesteps, int), epochs=epochs,
        batch_size=batch_size, lr=lr, dice_weight=dice, loss=loss, focal_gamma=focal_gamma,
        class_weights=class_weights, patience=patience, label_fraction=parse_label_fraction(label_fraction),
        runs=runs, seed=seed, augment=augment == "d4", loader_workers=loader_workers, device=device,
        coefficients=coefficients, head_options=parse_head_args(head_args), allow_partial=allow_partial,
    )
    r = train(stores, out, config, overwrite=overwrite, progress=not quiet, echo=typer.echo)
    typer.echo(r.line())


@app.command("evaluate")
@guarded
def evaluate_cmd(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run directory written by 'pathsegdiff train'.")],
    store: Annotated[list[str] | None, typer.Option("--store", metavar="STORE", help="Store to evaluate on (same features as the training stores); repeat for several; default: the stores the run was trained on.")] = None,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="train, val or test.")] = "test",
    device: Device = "cpu",
    batch_size: Annotated[int, typer.Option(metavar="BATCH_SIZE", help="Tiles per batch.")] = 8,
    out: Annotated[str | None, typer.Option("-o", "--out", metavar="OUT", help="Report directory; default RUN/eval/<store>-<split>.")] = None,
    head_code: Annotated[str | None, typer.Option(metavar="HEAD_CODE", help="A plug-in head's code, when the file the run recorded is gone or changed: a copy with the recorded SHA-256 (another is refused).")] = None,
    quiet: Quiet = False,
) -> None:
    """Evaluate a trained head on a split of a store; write results.json, summary.md and plots."""
    from pathsegdiff.train_head.checkpoint import recorded_stores
    from pathsegdiff.train_head.evaluate import evaluate_run

    if not store:
        store = recorded_stores(run)
        typer.echo(f"evaluating on {' + '.join(store)}, the store{'s' * (len(store) > 1)} the run was trained on")
    r = evaluate_run(run, store, split=split, device=device, batch_size=batch_size, out_dir=out,
                     progress=not quiet, head_code=head_code)
    typer.echo(r.line())


# --- predict / demo / doctor -------------------------------------------------
@app.command("predict")
@guarded
def predict_cmd(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="An image (PNG/JPEG/TIFF) or a whole slide (.svs, .ndpi, pyramidal .tif).")],
    head: Annotated[str, typer.Option("--head", metavar="HEAD", help="Run directory of a trained head ('pathsegdiff train -o RUN').")],
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Output directory: mask, overlay.png, regions.geojson.")],
    model: Annotated[str | None, typer.Option("--model", metavar="MODEL", help="The model the head's store was made with: a model directory, or tiny, tiny-dit, tiny-vit (default: tiny; with --store: none, so a store that lacks tiles is refused).")] = None,
    store: Annotated[str | None, typer.Option("--store", metavar="STORE", help="Read features from this store instead of running the model; the tiles it lacks are computed with --model, or refused.")] = None,
    conditioning: Annotated[str, typer.Option(metavar="CONDITIONING", help="null | hipt:PATH | precomputed:PATH, as at extraction.")] = "null",
    overlap: Annotated[int | None, typer.Option(metavar="OVERLAP", help="Pixels of overlap between neighbouring tiles (default: a quarter of the tile).")] = None,
    window: Annotated[str, typer.Option(metavar="WINDOW", help="Tile fusion: gaussian (centre-weighted), mean, or none.")] = "gaussian",
    batch_size: Annotated[int, typer.Option(metavar="BATCH_SIZE", help="Tiles per model batch.")] = 8,
    device: Device = "cpu",
    mpp: Annotated[float, typer.Option(metavar="MPP", help="Analysis resolution, um/px (the head's: 0.5 for the reference model).")] = 0.5,
    source_mpp: Annotated[float | None, typer.Option(metavar="SOURCE_MPP", help="Resolution of a plain image, um/px (default: assume it is already at --mpp).")] = None,
    min_tissue: Annotated[float, typer.Option(metavar="MIN_TISSUE", help="Slides: skip tiles with less tissue than this fraction (0: analyse every tile with any tissue).")] = 0.0,
    head_code: Annotated[str | None, typer.Option(metavar="HEAD_CODE", help="A plug-in head's code, when the file the run recorded is gone or changed: a copy with the recorded SHA-256 (another is refused).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Segment an image or a whole slide with a trained head; tiles fused with a centre-weighted window."""
    from pathsegdiff.predict.run import PredictConfig, predict

    cfg = PredictConfig(model=model or (None if store else "tiny"), conditioning=conditioning, overlap=overlap, window=window,
                        batch_size=batch_size, device=device, target_mpp=mpp, min_tissue=min_tissue, store=store,
                        source_mpp=source_mpp, head_code=head_code)
    summary = predict(input, head, out, cfg, overwrite=overwrite, echo=typer.echo)
    typer.echo(summary.line())


@app.command("compare")
@guarded
def compare_cmd(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="Run directory (or its results.json) of the reference, e.g. the head trained on the float16 store.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="Run directory (or its results.json) to compare with it, e.g. the same head on a compact store.")],
    tolerance: Annotated[float, typer.Option(metavar="TOLERANCE", help="A delta within this many points (or the seed spread, if larger) counts as no loss.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """Metric deltas B - A in points, with the runs' seed-to-seed spread (train both with --runs 3 or more)."""
    import json

    from pathsegdiff.train_head.compare import compare_runs, format_comparison

    c = compare_runs(run_a, run_b, tolerance=tolerance)
    typer.echo(json.dumps(c.to_dict(), indent=2) if as_json else format_comparison(c))


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


convert_app = typer.Typer(help="Convert published checkpoints into folders that --model loads.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(convert_app, name="convert")


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


@app.command("demo")
@guarded
def demo_cmd(
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Output directory.")] = "demo_out",
    slide: Annotated[str | None, typer.Option(metavar="SLIDE", help="Another H&E slide instead of the bundled CC0 one.")] = None,
    epochs: Annotated[int, typer.Option(metavar="EPOCHS", help="Most training epochs for the head.")] = 15,
    model: Annotated[str, typer.Option(metavar="MODEL", help="he-tiny (trained on this slide without the demo's test tiles) or tiny (seeded, untrained).")] = "he-tiny",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier demo output in OUT (never other files).")] = False,
) -> None:
    """The whole job on a real H&E slide with he-tiny (trained here on that slide): extract, train, evaluate, predict."""
    from pathsegdiff.demo import DemoConfig, run_demo

    cfg = DemoConfig(epochs=epochs, model=model, **({"slide": slide} if slide else {}))
    run_demo(out, cfg, overwrite=overwrite, echo=typer.echo)


@app.command("doctor")
@guarded
def doctor_cmd(
    no_self_test: Annotated[bool, typer.Option("--no-self-test", help="Skip the tiny-model self-test.")] = False,
) -> None:
    """Versions, device, free disk, optional extras, and a self-test on the tiny model."""
    from pathsegdiff.doctor import run_doctor

    report = run_doctor(self_test_enabled=not no_self_test)
    typer.echo("\n".join(report.lines))
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry when run as a module
    app(prog_name="pathsegdiff")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
