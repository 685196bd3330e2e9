"""Fixtures: one small synthetic store for every sweep test (see ``helpers.synthetic_store``)."""

from __future__ import annotations

import pytest
import torch

from helpers.synthetic_store import build_store


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory):
    """40 tiles: 24 train, 8 val, 8 test; blocks up1, up2; timesteps 50, 150."""
    return build_store(tmp_path_factory.mktemp("stores") / "sweep")


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared by several test runs; one torch thread keeps timings sane."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
