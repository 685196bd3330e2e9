"""`--help` reads as a user expects: options name their values, the store group lists its commands."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from pathsegdiff.cli import app

runner = CliRunner()
COMMANDS = [["extract"], ["train"], ["evaluate"], ["predict"], ["compare"], ["pretrain"], ["cluster"], ["demo"],
            ["store", "info"], ["store", "verify"], ["store", "pack"], ["store", "copy"], ["store", "ls"],
            ["store", "compact"], ["convert", "timm-vit"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_options_show_a_name_not_a_python_type(command):
    out = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    options = [ln for ln in out.splitlines() if ln.lstrip().startswith("-")]
    assert options, out
    typed = [ln for ln in options if re.search(r"<(str|int|float|list\[\w+\])>", ln)]
    assert typed == [], typed


def test_the_store_group_names_every_command():
    out = runner.invoke(app, ["store", "--help"], env={"COLUMNS": "200"}).output
    first = out.split("Options:")[0]
    for name in ("info", "ls", "verify", "copy", "pack", "compact"):
        assert name in first, name


def test_min_tissue_says_annotated_tiles_are_kept():
    out = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    assert "annotated glass included" in " ".join(out.split())
