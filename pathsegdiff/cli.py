"""The ``pathsegdiff`` command line: one library call per command.

Expected errors (:class:`PathsegdiffError`) print one line and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pathsegdiff.errors import PathsegdiffError

app = typer.Typer(
    name="pathsegdiff",
    help="Cache diffusion-model features of pathology tiles in a Zarr store; train segmentation heads from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect, verify and pack feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")

_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for expected errors.")] = False,
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

# --- extract -----------------------------------------------------------------

# --- train / evaluate --------------------------------------------------------

# --- predict / demo / doctor -------------------------------------------------


def main() -> None:  # pragma: no cover - console entry when run as a module
    app(prog_name="pathsegdiff")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
