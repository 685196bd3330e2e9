"""Scaling benchmark: extraction tiles/s in-process, on a dask cluster of 1 worker, and of 2 workers.

Tiles are real H&E: the first ``--tiles`` tissue tiles of
tests/data/cmu_small_region.svs (256 px every ``--stride`` px at 0.5 um/px),
extracted with the tiny model, one torch thread everywhere (the in-process
run and each worker process), into a fresh local store per run.

For each cluster size a local cluster is started and warmed up (every worker
loads the model on a small run; start-up and warm-up are printed apart),
then ``--repeat`` rounds each time one in-process run (``run_extraction``, the
model already built) and one distributed run (``run_distributed`` against
the warm cluster).  Medians are printed; each run's wall time includes store
creation and everything the coordinator does.

- ``2 workers / 1 worker`` is the scaling on this machine; with 2 cores and
  the coordinator on them too, it is bounded by 2.
- The coordinator overhead per tile is (1-worker run - in-process run) / tiles:
  scheduling, shipping ranges, status writes, and a model call per range
  that runs in another process.

Every distributed store is compared byte for byte with the in-process one.

Run from the repository root with the project's virtual environment:

    .venv/bin/python bench/scale.py                  # 64 tiles, 2 rounds: a few minutes on 2 cores
    .venv/bin/python bench/scale.py --tiles 128 --stride 64 --repeat 3
    .venv/bin/python bench/scale.py --tiles 8 --batch-size 4 --repeat 1   # quickest: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

SLIDE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_small_region.svs"


def chunks(root: Path) -> dict[str, bytes]:
    """Every data object (the root document records the run, so it differs)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json" and not p.name.startswith(".") and p.suffix != ".partial"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=64, help="tiles per run")
    p.add_argument("--stride", type=int, default=128, help="grid step in px (64 gives 572 tiles)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="rounds per cluster size; medians are printed")
    p.add_argument("--dir", default=None, help="where the stores go (a temporary folder inside)")
    args = p.parse_args(argv)

    from pathsegdiff.extract.backbones import load_backbone
    from pathsegdiff.extract.run.cluster import ClusterConfig, connect
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.distributed import run_distributed
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.tiles.datasets import SourceConfig, open_source

    torch.set_num_threads(1)
    source = open_source(SLIDE, SourceConfig(tile_size=256, stride=args.stride))
    if args.tiles > len(source):
        raise SystemExit(f"only {len(source)} tiles at stride {args.stride}; use a smaller --stride")
    cfg = ExtractConfig(batch_size=args.batch_size, threads=1, limit=args.tiles, decode_workers=0, overwrite=True)
    backbone = load_backbone("tiny")
    quiet = {"progress": False, "echo": lambda line: None}
    seconds: dict[str, list[float]] = {"in-process": []}
    setup: dict[str, float] = {}
    identical: dict[str, bool] = {}

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        for n in (1, 2):
            name = f"{n} worker" + ("s" if n > 1 else "")
            t = time.perf_counter()
            with connect(ClusterConfig(workers=n)) as client:
                remote = ClusterConfig(scheduler=client.scheduler.address)
                run_distributed(source, tmp / "warm.zarr", cfg, remote, **quiet)  # every worker loads the model
                setup[name] = time.perf_counter() - t
                for r in range(args.repeat):
                    s = run_extraction(source, tmp / "single.zarr", cfg, backbone=backbone, **quiet)
                    seconds["in-process"].append(s.seconds)
                    d = run_distributed(source, tmp / f"d{n}.zarr", cfg, remote, **quiet)
                    seconds.setdefault(name, []).append(d.seconds)
                    assert s.written == d.written == args.tiles, (s.line(), d.line())
                    print(f"round {r + 1}, {name}: in-process {s.seconds:.1f} s, distributed {d.seconds:.1f} s",
                          file=sys.stderr)
                identical[name] = chunks(tmp / f"d{n}.zarr") == chunks(tmp / "single.zarr")

    med = {k: median(v) for k, v in seconds.items()}
    rate = {k: args.tiles / v for k, v in med.items()}
    print(f"\n{args.tiles} tiles of 256 px (tiny model, one torch thread per process, batch {args.batch_size}), "
          f"medians of {args.repeat} rounds per cluster size\n")
    print("| run | seconds | tiles/s | cluster start + warm-up, s | store identical to in-process |")
    print("|---|---|---|---|---|")
    for k in med:
        same = "-" if k == "in-process" else ("yes" if identical[k] else "NO")
        print(f"| {k} | {med[k]:.2f} | {rate[k]:.2f} | {f'{setup[k]:.1f}' if k in setup else '-'} | {same} |")
    print(f"\n2 workers / 1 worker: {rate['2 workers'] / rate['1 worker']:.2f}x")
    overhead = (med["1 worker"] - med["in-process"]) / args.tiles
    print(f"coordinator overhead per tile (1 worker - in-process): {overhead * 1e3:.1f} ms "
          f"({overhead / (med['in-process'] / args.tiles) * 100:.0f} % of an in-process tile)")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
