"""The ``pathsegdiff`` command line: a thin typer app, one short function per command.

Each module registers its commands on the shared apps of :mod:`pathsegdiff.cli.common`;
importing them here, in this order, is what lists the commands in ``--help``.
"""

from __future__ import annotations

# isort: off
from pathsegdiff.cli import store_cmds, extract_cmd, head_cmds, sweep_cmd, model_cmds, app_cmds  # noqa: F401  (registers them, in this order)
# isort: on
from pathsegdiff.cli.common import app
from pathsegdiff.cli.head_cmds import evaluate_cmd, predict_cmd, train_cmd

__all__ = ["app", "main", "train_cmd", "evaluate_cmd", "predict_cmd"]


def main() -> None:  # pragma: no cover - the console entry point
    app(prog_name="pathsegdiff")
