"""Growing a cohort store: a fourth slide appended byte for byte, SIGKILL mid-cohort then resume, refusals."""

from __future__ import annotations

import shutil
import sys

import numpy as np

from helpers import cohort_data as cd
from helpers.cohort_data import COHORT_ARGS, extract
from helpers.sigkill import run_then_sigkill
from helpers.stores import store_bytes
from pathsegdiff.store import open_store
from pathsegdiff.store.tile_table import full_table
from pathsegdiff.store.create import open_or_create
from pathsegdiff.store.grow import JOURNAL, begin_append
from pathsegdiff.store.backend.location import parse_location
from pathsegdiff.store.reader import read_root_attrs
from pathsegdiff.store.commands.verify import verify_store


def _data(store) -> dict[str, bytes]:
    """Every object but the root document, whose provenance records the command line of each run."""
    return {k: v for k, v in store_bytes(store).items() if k != "zarr.json"}


def test_appending_a_fourth_slide_leaves_every_existing_chunk_byte_identical(cohort, cohort_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    before = store_bytes(store)
    code, output = extract(cohort["manifest4"], store)
    assert code == 0, output
    assert "9 tiles written (9 appended to the store), 52 already written" in output  # nothing recomputed
    after = store_bytes(store)
    changed = sorted(k for k in before if after[k] != before[k])
    # array metadata (the tile axis is longer) and the status chunk (the new tiles are written); no data chunk
    assert all(k.endswith("zarr.json") or k == "tiles/status/c/0" for k in changed), changed
    assert not any(k.startswith(("features/", "labels/", "rgb/", "ssl/")) and not k.endswith("zarr.json")
                   for k in changed)
    fs = open_store(store)
    t = full_table(fs)
    assert fs.n_tiles == 61 and len(fs.written()) == 61 and verify_store(store).ok
    assert list(t["slide_id"][52:]) == ["c"] * 9 and set(t["patient"][52:]) == {"P3"}
    assert read_root_attrs(parse_location(store))["provenance"]["appended"][0]["slides"] == ["c"]
    # c's label mask (downsample 4) at 1 um/px: the same areas as its rectangles, tile by tile
    counts = sum(np.bincount(fs.read_labels(i).ravel(), minlength=256) for i in range(52, 61))
    tumor, stroma = cd.box_areas_of_mask()
    want = [sum(_overlap(r, (x, y, 256)) for r in rects for x, y in zip(t["x"][52:], t["y"][52:])) / 4
            for rects in (tumor, stroma)]
    assert abs(counts[0] - want[0]) <= 0.01 * want[0] and abs(counts[1] - want[1]) <= 0.01 * want[1]


def _overlap(rect, tile) -> float:
    (x0, y0, x1, y1), (tx, ty, s) = rect, tile
    return max(0, min(x1, tx + s) - max(x0, tx)) * max(0, min(y1, ty + s) - max(y0, ty))


def test_a_slide_listed_first_is_appended_at_the_end(cohort, cohort_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    before = _data(store)
    rows = [{"slide": str(cohort["c"]), "annotations": str(cohort["c_ann"]), "patient": "P3"},
            {"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1"},
            {"slide": str(cohort["b"]), "annotations": str(cohort["b_ann"]), "patient": "P1"},
            {"slide": str(cohort["svs"]), "annotations": str(cohort["svs_ann"]), "patient": "P2"}]
    shutil.copy(cohort["root"] / "classes.txt", tmp_path / "classes.txt")
    code, output = extract(cd.write_manifest(tmp_path / "m.csv", rows), store)
    assert code == 0 and "9 appended" in output, output
    assert list(dict.fromkeys(open_store(store).table()["slide_id"])) == ["a", "b", "cmu_small_region", "c"]
    after = _data(store)
    assert all(after[k] == v for k, v in before.items() if not k.endswith("zarr.json") and k != "tiles/status/c/0")


def test_a_store_never_drops_or_changes_a_tile(cohort, cohort_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    before = store_bytes(store)
    shutil.copy(cohort["root"] / "classes.txt", tmp_path / "classes.txt")
    fewer = cd.write_manifest(tmp_path / "fewer.csv", [
        {"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1"}])
    code, output = extract(fewer, store)
    assert code == 1 and "holds 43 tiles this source does not (slides b, cmu_small_region" in output, output
    moved = cd.write_manifest(tmp_path / "moved.csv", [
        {"slide": str(cohort["a"]), "annotations": str(cohort["a_ann"]), "patient": "P1", "split": "test"},
        {"slide": str(cohort["b"]), "annotations": str(cohort["b_ann"]), "patient": "P1", "split": "test"},
        {"slide": str(cohort["svs"]), "annotations": str(cohort["svs_ann"]), "patient": "P2"}])
    code, output = extract(moved, store)
    assert code == 1 and "tile a_0_0 has split '' in the store but 'test' in this source" in output, output
    code, output = extract(cohort["manifest"], store, "--stride", "96")
    assert code == 1 and "never drops tiles" in output
    assert store_bytes(store) == before


def test_an_append_killed_midway_is_rolled_back_and_redone(cohort, cohort_store, tmp_path):
    from pathsegdiff.tiles.datasets import SourceConfig, open_source

    store = tmp_path / "s.zarr"
    shutil.copytree(cohort_store[0], store)
    src = open_source(cohort["manifest4"], SourceConfig(tile_size=128, target_mpp=1.0, unknown_classes="ignore"))
    loc = parse_location(store)
    begin_append(loc, 52, src.records[52:], {"command": "killed"})  # journalled, cohort columns grown ...
    import zarr  # ... and some arrays resized, as a writer killed inside append_tiles leaves them

    group = zarr.open_group(str(store), mode="r+")
    for name in ("tiles/tile_id", "tiles/status", "features/t50/up1"):
        group[name].resize((61, *group[name].shape[1:]))
    assert JOURNAL in read_root_attrs(loc)
    fs = open_store(cohort_store[0])
    with open_or_create(store, fs.schema, src.records) as w:
        assert w.n_tiles == 61 and list(w.missing()) == list(range(52, 61))
    assert JOURNAL not in read_root_attrs(loc) and verify_store(store).ok
    assert full_table(open_store(store))["patient"][60] == "P3"


def test_sigkill_mid_cohort_then_resume_gives_the_same_store(cohort, cohort_store, tmp_path):
    out = tmp_path / "k.zarr"
    cmd = [sys.executable, "-m", "pathsegdiff.cli", "extract", str(cohort["manifest"]), "-o", str(out), *COHORT_ARGS]
    proc = run_then_sigkill(cmd, out, written=12)  # inside the second slide or later: a's 9 tiles are written
    assert proc.returncode == -9, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    fs = open_store(out)
    assert 9 < len(fs.written()) < 52 and verify_store(out).ok
    code, output = extract(cohort["manifest"], out, "--batch-size", "5")
    assert code == 0 and "already written" in output, output
    assert _data(out) == _data(cohort_store[0])
