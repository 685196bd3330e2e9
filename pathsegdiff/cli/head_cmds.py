"""The head commands: train, evaluate, predict, compare."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import (Device, Epochs, LabelDraws, LearningRate, Quiet, StoreBlocks, StoreTimesteps,
                                    TrainBatchSize, TrainStoreArg, app, guarded, split_list)


# --- train / evaluate --------------------------------------------------------

@app.command("train")
@guarded
def train_cmd(
    stores: TrainStoreArg,
    out: Annotated[str, typer.Option("-o", "--out", metavar="OUT", help="Run directory to write (refused if it holds another run).")],
    head: Annotated[str, typer.Option(metavar="HEAD", help="Head: fcn, linear, mlp, rgb-fcn (fcn + the tile's stored RGB at full resolution), or your own nn.Module as path/to/heads.py:Class or package.module:Class (docs/heads.md); the run records its file's SHA-256.")] = "fcn",
    head_args: Annotated[str | None, typer.Option(metavar="HEAD_ARGS", help="The head's keyword arguments: a JSON object ('{\"width\": 64}') or a .json file; built-in heads take their own fields (fcn: proj_channels, hidden_channels, conv_layers; rgb-fcn also rgb_channels, rgb_layers; mlp: mlp_hidden, ensemble, pixels_per_tile).")] = None,
    blocks: StoreBlocks = None,
    timesteps: StoreTimesteps = None,
    epochs: Epochs = 30,
    batch_size: TrainBatchSize = 8,
    lr: LearningRate = 1e-3,
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
    label_draws: LabelDraws = "fixed",
    synthetic: Annotated[str, typer.Option(metavar="SYNTHETIC", help="The stores' synthetic tiles (extracted with --origin synthetic): include (the default: added to the real train tiles the label fraction keeps), exclude, or only (train on them alone). Never used for validation or test whatever this is; the run says how many it trained on.")] = "include",
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
        synthetic=synthetic, label_draws=label_draws,
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
                     progress=not quiet, head_code=head_code, echo=typer.echo)
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
