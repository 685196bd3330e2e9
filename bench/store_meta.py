"""How ``store info`` and ``store ls`` scale with the number of tiles (the metadata, not the features).

Builds stores of 10^4, 10^5 and 10^6 tiles through the store API, with the
smallest features (one block of 1x1x1 channels at one timestep, no RGB), 1,000
tiles per slide and the first 1,000 tiles written (a mostly-unwritten store:
the tile table and the status are full size, the feature chunks are few), then
times, in this process and as the command a user types:

- ``store info`` (tile table, status, attributes; no listing of the objects),
- ``store ls`` (the first 50 rows, and the first 50 todo ones),
- creating the store (``create_store`` with the tile records), for scale.

Never run in CI.  Usage::

    .venv/bin/python bench/store_meta.py                   # 10^4, 10^5, 10^6 tiles
    .venv/bin/python bench/store_meta.py --tiles 10000     # one size
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store
from pathsegdiff.store.commands.info import format_info, store_info
from pathsegdiff.store.commands.ls import format_rows, list_tiles

WRITTEN = 1000
PER_SLIDE = 1000


def make(path: Path, n: int) -> dict[str, float]:
    spec = FeatureSpec("bench-meta", "0" * 64, (BlockSpec("b", 1, 1, 1),), (50,))
    schema = StoreSchema(spec, n_tiles=n, store_rgb=False)
    t0 = time.perf_counter()
    splits = ("train", "val", "test")
    records = [TileRecord(f"s{i // PER_SLIDE:05d}_{i % PER_SLIDE:04d}", f"s{i // PER_SLIDE:05d}", 256 * (i % 40),
                          256 * (i % PER_SLIDE // 40), 0.5, splits[i // PER_SLIDE % 3]) for i in range(n)]
    t1 = time.perf_counter()
    with create_store(path, schema, records, {"source": "bench/store_meta.py"}) as w:
        t2 = time.perf_counter()
        for a in range(0, min(WRITTEN, n), 100):
            w.write(range(a, a + 100), TileBatch({50: {"b": np.ones((100, 1, 1, 1), np.float16)}}))
    return {"records": t1 - t0, "create": t2 - t1, "write": time.perf_counter() - t2}


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def command(*args: str) -> float:
    """Wall seconds of ``pathsegdiff ARGS`` as a user runs it (interpreter start and imports included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pathsegdiff.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="store_meta_"))
    rows = []
    try:
        for n in args.tiles:
            path = root / f"s{n}.zarr"
            made = make(path, n)
            info_s = best_of(lambda: format_info(store_info(path)))
            ls_s = best_of(lambda: format_rows(list_tiles(path)))
            ls_todo_s = best_of(lambda: format_rows(list_tiles(path, "todo")))
            cli_info = min(command("store", "info", str(path)) for _ in range(2))
            cli_ls = min(command("store", "ls", str(path)) for _ in range(2))
            rows.append((n, made, info_s, ls_s, ls_todo_s, cli_info, cli_ls))
            print(f"{n:>9,} tiles: info {info_s:.3f} s, ls {ls_s:.3f} s, ls --status todo {ls_todo_s:.3f} s "
                  f"(commands: info {cli_info:.2f} s, ls {cli_ls:.2f} s); made in {sum(made.values()):.1f} s "
                  f"(records {made['records']:.1f}, create {made['create']:.1f}, write {made['write']:.1f})",
                  flush=True)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| tiles | store info | store ls | ls --status todo | `pathsegdiff store info` | `pathsegdiff store ls` "
          "| create (records + store) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, made, info_s, ls_s, ls_todo_s, cli_info, cli_ls in rows:
        print(f"| {n:,} | {info_s:.3f} s | {ls_s:.3f} s | {ls_todo_s:.3f} s | {cli_info:.2f} s | {cli_ls:.2f} s "
              f"| {made['records']:.1f} + {made['create']:.1f} s |")


if __name__ == "__main__":
    main()
