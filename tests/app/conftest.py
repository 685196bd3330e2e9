"""Session fixtures for the cohort tests: the annotated cohort's files and its store (tiny model)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """The cohort's files (``helpers.cohort_data.make_cohort``)."""
    pytest.importorskip("tiffslide")
    from helpers.cohort_data import make_cohort

    return make_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def cohort_store(cohort, tmp_path_factory):
    """One store of the three-slide manifest (a.tif, b.tif, the .svs): (path, CLI output)."""
    from helpers.cohort_data import extract

    out = tmp_path_factory.mktemp("stores") / "cohort.zarr"
    code, output = extract(cohort["manifest"], out)
    assert code == 0, output
    return out, output
