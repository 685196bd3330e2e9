"""Fixtures: small synthetic stores (see ``helpers.synthetic_store``)."""

from __future__ import annotations

import pytest
import torch

from helpers.synthetic_store import build_store


@pytest.fixture(scope="session")
def learnable_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("stores") / "learnable")


@pytest.fixture(scope="session")
def shuffled_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("stores") / "shuffled", shuffled=True)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared by several test runs; one torch thread keeps timings sane."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
