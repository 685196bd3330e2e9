"""Fixtures for the extraction tests: the tiny model, loaded once per session, and the reference store."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    from pathsegdiff.extract.backbones import load_backbone

    torch.set_num_threads(1)  # the CI machine has 2 cores shared with other jobs
    return load_backbone("tiny")


@pytest.fixture
def tiles():
    """Seven 64 px uint8 tiles and their ids."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (7, 3, 64, 64), generator=gen, dtype=torch.uint8)
    return rgb, [f"slide/{i}" for i in range(7)]


@pytest.fixture(scope="module")
def reference(one_thread, tmp_path_factory):
    """The bundled H&E tiles extracted in one process, batch 7, one torch thread (test_job.py, test_distributed.py)."""
    from helpers.he_tiles import TILES, extract

    out = tmp_path_factory.mktemp("ref") / "s.zarr"
    code, output = extract(TILES, out, "--batch-size", "7")
    assert code == 0, output
    return out
