"""docs/notebooks/custom_head.ipynb runs top to bottom: a custom head trained, evaluated and saved from Python,
and the saved run read by the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "docs" / "notebooks" / "custom_head.ipynb"


def test_the_custom_head_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat, nbclient and ipykernel")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the kernel trains on one thread, as the suite does
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute(env=env)  # the venv's ipykernel provides "python3": this interpreter
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "NucleiHead head, seed 0: best epoch" in outputs
    assert "NucleiHead head, val split" in outputs  # the command line's evaluate of the saved run
    assert "linear head, val split" in outputs
    assert (tmp_path / "runs" / "nuclei" / "runs" / "seed_0" / "head.safetensors").is_file()
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
