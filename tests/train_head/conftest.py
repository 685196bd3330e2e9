"""Fixtures: small synthetic stores (see ``helpers.synthetic_store``)."""

from __future__ import annotations

import pytest

from helpers.synthetic_store import build_store


@pytest.fixture(scope="session")
def learnable_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("stores") / "learnable")


@pytest.fixture(scope="session")
def shuffled_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("stores") / "shuffled", shuffled=True)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every train_head test on one torch thread (tests/conftest.py): two cores are shared by several test runs."""
