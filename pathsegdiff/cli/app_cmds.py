"""The whole-job commands: demo and doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from pathsegdiff.cli.common import app, guarded


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
