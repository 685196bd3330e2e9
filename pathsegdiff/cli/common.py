"""What every command shares: the typer apps, the one-line error rule, list parsing, shared options.

Expected errors (:class:`PathsegdiffError`) print one line and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

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
convert_app = typer.Typer(help="Convert published checkpoints into folders that --model loads.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(convert_app, name="convert")

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



# Options several commands share, defined once.
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="cpu or cuda.")]
StoreBlocks = Annotated[str | None, typer.Option(metavar="BLOCKS", help="Comma-separated blocks; default: every block in the store.")]
StoreTimesteps = Annotated[str | None, typer.Option(metavar="TIMESTEPS", help="Comma-separated timesteps; default: all in the store.")]
LabelDraws = Annotated[str, typer.Option(metavar="fixed|per-run", help="fixed: every run trains on the same label subset (drawn with the data seed), so the spread over runs is the seeds'; per-run: run r draws its own subset (data seed + r), as the label-efficient protocol measures it.")]


StoreArg = Annotated[str, typer.Argument(metavar="STORE", help="Store: a directory, a .zip made by 'store pack', or a URL (s3://...).")]
TrainStoreArg = Annotated[list[str], typer.Argument(metavar="STORE", help="Stores with features and labels (a directory, a .zip or a URL); several are read as one: same blocks, timesteps, features and classes.")]
Epochs = Annotated[int, typer.Option(metavar="EPOCHS", help="Most epochs per run (early stopping may end sooner).")]
TrainBatchSize = Annotated[int, typer.Option(metavar="BATCH_SIZE", help="Tiles per step.")]
LearningRate = Annotated[float, typer.Option(metavar="LR", help="AdamW learning rate (cosine schedule).")]
