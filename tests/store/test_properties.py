"""Property tests for the writer: how tiles are batched, ordered, failed and resumed never changes the store.

Each example picks which tiles fail (from a few candidates, so references can
be cached), a random order, random batch sizes, re-writes of tiles already
written (a batch redone after a crash), and reopenings of the store between
batches (a resume).  The final objects must equal, byte for byte, those of a
store written in one sorted batch with its failures marked in one call.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import synth
from helpers.stores import store_bytes
from pathsegdiff.store import StoreSchema, create_store, open_or_create, open_store

N = synth.N_TILES
MAY_FAIL = (2, 7, 9)
# Modest example counts: each example writes a whole store, and CI has 2 cores.
PROPERTY_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reason(i: int) -> str:
    return f"tile{i:03d}: unreadable input"


@lru_cache(maxsize=None)
def reference(failed: frozenset[int]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ref.zarr"
        ok = [i for i in range(N) if i not in failed]
        with create_store(path, synth.schema(), synth.records(), {"test": "properties"}) as w:
            w.write(ok, synth.tile_batch(ok))
            if failed:
                w.mark_failed(sorted(failed), [reason(i) for i in sorted(failed)])
        return store_bytes(path)


@st.composite
def plans(draw):
    failed = frozenset(draw(st.sets(st.sampled_from(MAY_FAIL))))
    order = draw(st.permutations(range(N)))
    batches, done, start = [], [], 0
    while start < N:
        size = draw(st.integers(1, 5))
        fresh = list(order[start : start + size])
        # Re-write some tiles already written, as when a batch is redone after a crash.
        redo = draw(st.lists(st.sampled_from(done), unique=True, max_size=2)) if done else []
        redo = [i for i in redo if i not in failed and i not in fresh]
        batches.append((fresh, redo, draw(st.booleans())))  # (new tiles, rewritten tiles, reopen after)
        done += fresh
        start += size
    return failed, batches


@PROPERTY_SETTINGS
@given(plans())
def test_any_batching_order_failures_and_resumes_give_the_same_bytes(plan):
    failed, batches = plan
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.zarr"
        w = open_or_create(path, synth.schema(), synth.records(), {"test": "properties"})
        handled: set[int] = set()
        try:
            for fresh, redo, reopen in batches:
                write = [i for i in fresh if i not in failed] + redo
                if write:
                    w.write(write, synth.tile_batch(write))
                bad = [i for i in fresh if i in failed]
                if bad:
                    w.mark_failed(bad, [reason(i) for i in bad])
                handled |= set(fresh)
                if reopen:  # a resume: a new writer reads back what the last one left
                    w.close()
                    w = open_or_create(path, synth.schema(), synth.records(), {"test": "properties"})
                    assert set(w.missing().tolist()) == set(range(N)) - handled
        finally:
            w.close()
        got = store_bytes(path)
        assert open_store(path).fail_reasons() == {f"tile{i:03d}": reason(i) for i in sorted(failed)}
    assert got == reference(failed)


@lru_cache(maxsize=None)
def growable_reference() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.zarr"
        sch = StoreSchema(synth.spec(), n_tiles=None, class_names=synth.CLASSES, ssl_dim=5)
        with create_store(path, sch, [], {"test": "growable"}) as w:
            idx = w.append_tiles(synth.records())
            w.write(idx, synth.tile_batch(idx, sch))
        return store_bytes(path)


@settings(PROPERTY_SETTINGS, max_examples=6)  # every append resizes every array: slower per example
@given(st.lists(st.integers(2, 6), min_size=1, max_size=N), st.randoms(use_true_random=False))
def test_growable_store_appended_in_any_pieces_gives_the_same_bytes(sizes, random):
    sch = StoreSchema(synth.spec(), n_tiles=None, class_names=synth.CLASSES, ssl_dim=5)
    records = synth.records()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.zarr"
        with create_store(path, sch, [], {"test": "growable"}) as w:
            start, k = 0, 0
            while start < N:
                size = sizes[k % len(sizes)]
                idx = w.append_tiles(records[start : start + size])
                assert list(idx) == list(range(start, min(start + size, N)))
                start, k = start + size, k + 1
                todo = [int(i) for i in w.missing()]
                random.shuffle(todo)
                part = todo[: random.randint(0, len(todo))]  # write some of what is missing, in any order
                if part:
                    w.write(part, synth.tile_batch(part, sch))
            rest = [int(i) for i in w.missing()]
            if rest:
                w.write(rest, synth.tile_batch(rest, sch))
        assert np.all(open_store(path).status() == 1)
        got = store_bytes(path)
    assert got == growable_reference()
