"""The sweep command: train a grid of heads, block sets, timestep sets and label fractions; one table, one plot."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import (Device, Epochs, LabelDraws, LearningRate, Quiet, TrainBatchSize, TrainStoreArg, app,
                                    guarded)

@app.command("sweep")
@guarded
def sweep_cmd(
    stores: TrainStoreArg,
    out: Annotated[str, typer.Option("-o", "--out", metavar="DIR", help="Sweep folder: cells/<cell>/ (a run directory per cell, read by 'evaluate'), sweep.csv, sweep.md, sweep.png. Rerun with the same options to resume it (finished cells are skipped); other options are refused unless --overwrite.")],
    heads: Annotated[str, typer.Option(metavar="HEADS", help="Comma-separated heads, each as 'train --head' takes it: fcn, linear, mlp, rgb-fcn or a plug-in path/to/heads.py:Class.")] = "fcn",
    blocks: Annotated[str | None, typer.Option(metavar="BLOCK_SETS", help="Comma-separated block sets, members joined by '+': up1,up2,up1+up2. Default: one set, every block in the store.")] = None,
    timesteps: Annotated[str | None, typer.Option(metavar="TIMESTEP_SETS", help="Comma-separated timestep sets, members joined by '+': 50,150,50+150. Default: one set, every timestep in the store.")] = None,
    label_fraction: Annotated[str, typer.Option(metavar="LABEL_FRACTIONS", help="Comma-separated label fractions of the train tiles: fractions (0.1), percentages (10%) or tile counts (25). One that keeps fewer than 4 train tiles (MIN_TRAIN_TILES) is refused.")] = "1",
    label_draws: LabelDraws = "fixed",
    runs: Annotated[int, typer.Option(metavar="RUNS", help="Runs per cell, with seeds seed..seed+runs-1; the table gives mean and sd over them.")] = 3,
    jobs: Annotated[int, typer.Option(metavar="JOBS", help="Cells trained at once, each in its own process.")] = 1,
    threads: Annotated[int | None, typer.Option(metavar="THREADS", help="Torch threads per process; default: the usable cores divided by --jobs. Results are bit-identical across --jobs when --threads is the same.")] = None,
    head_args: Annotated[str | None, typer.Option(metavar="HEAD_ARGS", help="Keyword arguments given to every head, as 'train --head-args' takes them: a JSON object or a .json file.")] = None,
    epochs: Epochs = 30,
    batch_size: TrainBatchSize = 8,
    lr: LearningRate = 1e-3,
    patience: Annotated[int, typer.Option(metavar="PATIENCE", help="Stop a run after this many epochs without a better val mIoU.")] = 8,
    augment: Annotated[str, typer.Option(metavar="AUGMENT", help="d4 (random quarter turns and flips; an approximation, diffusion features are not rotation-equivariant) or none.")] = "d4",
    seed: Annotated[int, typer.Option(metavar="SEED", help="Seed of each cell's first run.")] = 0,
    device: Device = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier sweep in --out (a folder holding anything else is never replaced).")] = False,
    quiet: Quiet = False,
) -> None:
    """Train every combination of heads, block sets, timestep sets and label fractions, --runs times each; write
    one table (mean and sd per cell) and one plot (mIoU with error bars)."""
    from pathsegdiff.errors import ConfigError
    from pathsegdiff.sweep import SweepConfig, parse_fractions, parse_heads, parse_sets, run_sweep
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.heads import parse_head_args

    if augment not in ("d4", "none"):
        raise ConfigError(f"--augment {augment!r}: choose d4 or none")
    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, augment=augment == "d4",
                        runs=runs, seed=seed, device=device, head_options=parse_head_args(head_args),
                        label_draws=label_draws)
    config = SweepConfig(heads=parse_heads(heads), block_sets=parse_sets(blocks, "--blocks"),
                         timestep_sets=parse_sets(timesteps, "--timesteps", int),
                         label_fractions=parse_fractions(label_fraction), train=train)
    r = run_sweep(stores, out, config, jobs=jobs, threads=threads, overwrite=overwrite, progress=not quiet,
                  echo=typer.echo)
    typer.echo(r.line())
