"""SIGKILL of ``pathsegdiff extract`` at seeded points, then a resume: the store is bit-identical to an uninterrupted run.

Ten seeds, two per phase (model load, store creation, mid-batch in the UNet
forward, mid-write, finalisation); helpers/kill_points.py draws the exact point and
helpers/kill_extract_child.py kills there.  Each test asserts that the child really
died of SIGKILL, so none can pass without a kill.  bench/soak.py runs the same
over many more seeds.
"""

from __future__ import annotations

import pytest

from helpers import synth
from helpers.kill_points import PHASES, KillHarness, plan
from helpers.stores import store_bytes
from pathsegdiff.store import create_store, open_store, open_writer
from pathsegdiff.store.commands.verify import verify_store

SEEDS = range(10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = KillHarness(tmp_path_factory.mktemp("kills"))
    yield h
    h.close()


def test_the_seeds_cover_every_phase_and_the_census_sees_every_site(harness):
    assert {plan(s, harness.census).phase for s in SEEDS} == set(PHASES)
    sites = {"load.module", "load.seed", "create.set", "batch.forward", "write.chunk", "write.partial",
             "write.status", "lock.release", "returned"}
    assert {k for k, v in harness.census[0].items() if v} == sites


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_then_resume_is_bit_identical(harness, seed):
    outcome = harness.run(plan(seed, harness.census))
    assert outcome.killed, outcome.line()
    assert outcome.matched, outcome.line()


def test_a_writer_removes_the_temporary_files_of_a_write_killed_midway(tmp_path):
    """zarr writes each object to NAME.<hex>.partial and renames it; a kill in between leaves that file."""
    path = tmp_path / "s.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(2), synth.tile_batch(range(2)))
    before = store_bytes(path)
    leftovers = [path / "rgb" / f"c.2.0.0.0.{'a' * 32}.partial", path / "rgb" / "c" / "2" / "0" / "0" / f"0.{'b' * 32}.partial", path / f"zarr.{'0f' * 16}.partial"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a chunk")
    assert len(open_store(path).written()) == 2 and verify_store(path).ok  # readers do not mind, nor touch them
    assert all(p.exists() for p in leftovers)
    open_writer(path).close()
    assert not any(p.exists() for p in leftovers)
    assert store_bytes(path) == before
