"""Fixtures for the extraction tests: the tiny model, loaded once per session."""

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
