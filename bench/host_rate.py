"""The host side at GPU rate: the real extraction loop around a simulated device.

The model is replaced by ``SimulatedDevice`` (bench/simulated_device.py), a backbone with the
reference model's block shapes (``up1`` 576x32x32 + ``up2`` 384x64x64 at
t = 50 and 150: 8.65 MB of float16 per tile) that sleeps for the GPU's time
per batch (``batch / --rate`` seconds: the main thread waits there, as it
would at the GPU's sync point) and hands back float16 features already in
host memory: on a GPU they arrive by DMA, which costs the host no CPU.
Everything else is the real code: DataLoader decode of real H&E tiles (half
from tests/data/target_image.png, half JPEG tiles of the bundled .svs slide),
the featurizer (noise seeds, cast), ``loop.extract_tiles`` (writer thread,
queue) and the store (checks, checksums, chunk writes, status).  The compact
rows store the same features in a real preset (``--compact``, default
``pca64-int8``; bases fitted on the device's output).  On CUDA the loop
encodes on the device (extract/device_encoding.py) and copies the codes; so
here the simulated device hands over codes encoded once beforehand, as it
hands over features.  ``--host-encode`` instead leaves the encoding to the
writer's numpy encoder (a CPU run's path), to measure what that costs.

For each preset it runs ``before`` (every chunk through zarr's codec pipeline
and ``np.isfinite``, '/' chunk keys, as the store did), ``after, '/' keys``
(chunk_io.py, the exponent bit test) and ``after`` (the same with the
default '.' chunk keys, ``c.17.0.0.0``), in rotating order, at ``--rate`` and
with no device time at all (the host's ceiling), and prints medians:

  - tiles/s reached, and the share of the device's time the host kept busy;
  - per tile, wall ms of each lane of the loop: the main thread (decode,
    when decoding in-process, plus the featurizer's host work), the device
    (sleep), the writer thread (store checks, then waiting for the chunk
    pool, then status), and which lane binds;
  - CPU ms per tile of each lane (``thread_time``): the cores a tile rate
    costs, the steadier figure on a shared machine, from which the last
    lines project what a host with ``--project-cores`` cores would reach.

    .venv/bin/python bench/host_rate.py --rate 600            # about 5 minutes on 2 cores
    .venv/bin/python bench/extract.py --simulate-device 600   # the same, from the extraction benchmark
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

# beside this file in bench/
import store_io  # the store as before, and the '/' key layout
from simulated_device import REFERENCE_BLOCKS, SimulatedDevice, device_encoding, with_bases
from workload import bench_source  # the same real H&E tiles as bench/extract.py

VERSIONS = ("before", "after, '/' keys", "after")


@contextlib.contextmanager
def _before():
    with store_io.before_chunk_io(), store_io.slash_keys():
        yield


VERSIONS_SETUP = {"before": _before, "after, '/' keys": store_io.slash_keys, "after": contextlib.nullcontext}


def decode_rates(args, bench_source) -> None:
    """CPU ms per tile to decode each kind of tile, in this process: what decode workers need per tile/s."""
    source = bench_source(args.tiles, 256, args.stride)
    print("\ndecode, CPU ms per tile, one process (a decode worker's cost):")
    for part in source.parts:
        k = min(len(part), 32)
        part.load(0)  # an image source decodes its image once per process: that first load is not a tile's cost
        c = time.thread_time()
        for i in range(k):
            part.load(int(i * (len(part) - 1) / max(k - 1, 1)))
        ms = (time.thread_time() - c) / k * 1e3
        print(f"  {part.describe().get('kind', type(part).__name__):>10}: {ms:6.2f} ms -> one core decodes "
              f"{1e3 / ms:,.0f} tiles/s; {args.rate:g} tiles/s needs {args.rate * ms / 1e3:.1f} cores")


class Lanes:
    """Wall and thread-CPU seconds of the loop's lanes, measured around the real calls."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, lane: str, wall: float, cpu: float) -> None:
        with self._lock:
            self.wall[lane] = self.wall.get(lane, 0.0) + wall
            self.cpu[lane] = self.cpu.get(lane, 0.0) + cpu

    def wrap(self, lane: str, fn):
        def timed(*a, **kw):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.add(lane, time.perf_counter() - w, time.thread_time() - c)
        return timed


def run_once(args, source, rate: float, preset: str, store: Path) -> dict:
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer
    from pathsegdiff.extract.run.config import ExtractConfig, ExtractSummary
    from pathsegdiff.extract.run.describe import build_schema
    from pathsegdiff.extract.run.loop import extract_tiles
    from pathsegdiff.store import open_or_create

    device = SimulatedDevice(rate, 1, args.batch_size)
    featurizer = Featurizer(device, FeatureConfig(blocks=("up1", "up2"), timesteps=(50, 150)), per_tile=False)
    cfg = ExtractConfig(model="simulated", features=featurizer.cfg, batch_size=args.batch_size,
                        decode_workers=args.decode_workers, overwrite=True, compact=preset)
    schema, bases = with_bases(build_schema(source, featurizer, cfg), device, preset)
    lanes, loop_t = Lanes(), {}
    shutil.rmtree(store, ignore_errors=True)
    if not args.decode_workers:  # decoding in the loop's thread: time it there (workers would have to pickle this)
        source.load = lanes.wrap("decode", type(source).load.__get__(source))
    with open_or_create(store, schema, source.records, {"bench": "host_rate"}, overwrite=True, bases=bases) as w, \
            device_encoding(w, device, args.host_encode):
        w.write = lanes.wrap("writer", w.write)
        summary = ExtractSummary(str(store), len(source))
        c0, w0 = time.process_time(), time.perf_counter()
        main_cpu = time.thread_time()
        extract_tiles(source, np.arange(len(source)), w, _Timed(featurizer, lanes), cfg, summary, timings=loop_t)
        main_cpu = time.thread_time() - main_cpu
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stages = dict(w.timings)
    source.__dict__.pop("load", None)
    n = summary.written
    return {"n": n, "wall": wall, "cpu": cpu, "main_cpu": main_cpu, "device": device.seconds_per_tile * n,
            "lanes_wall": lanes.wall, "lanes_cpu": lanes.cpu, "loop": loop_t, "store": stages}


class _Timed:
    """The featurizer, its calls timed as the main thread's ``featurizer`` lane."""

    def __init__(self, featurizer, lanes: Lanes):
        self._featurizer, self._call = featurizer, lanes.wrap("main: featurizer", featurizer.__call__)

    def __call__(self, *a, **kw):
        return self._call(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._featurizer, name)


def summarise(r: dict, rate: float) -> dict:
    n = r["n"]
    per = lambda s: s / n * 1e3  # noqa: E731  ms per tile
    decode = r["lanes_wall"].get("decode", 0.0)
    feat = r["lanes_wall"].get("main: featurizer", 0.0)
    lanes = {
        "main thread (host work)": per(decode + feat - r["device"]),
        "device (simulated)": per(r["device"]),
        "writer thread": per(r["lanes_wall"].get("writer", 0.0)),
    }
    if r["loop"]["decode"] > decode + 1e-3:  # decode workers: the main thread waited for them
        lanes["waiting for decode workers"] = per(r["loop"]["decode"] - decode)
    cpu = {
        "decode": per(r["lanes_cpu"].get("decode", 0.0)),
        "featurizer (host)": per(r["lanes_cpu"].get("main: featurizer", 0.0)),
        "main thread, all": per(r["main_cpu"]),
        "writer thread": per(r["lanes_cpu"].get("writer", 0.0)),
        "chunk pool and other threads": per(r["cpu"] - r["main_cpu"] - r["lanes_cpu"].get("writer", 0.0)),
        "process": per(r["cpu"]),
    }
    st = r["store"]
    store = {k: per(st.get(k, 0.0)) for k in ("validate", "compact", "encode", "io", "chunks", "status")}
    return {"tiles_per_s": n / r["wall"], "lanes": lanes, "cpu": cpu, "store": store,
            "queue_wait": per(r["loop"]["queue"]), "binds": max(lanes, key=lanes.get)}


def project(s: dict, cores: int, target: float) -> list[str]:
    """What a host with ``cores`` cores reaches, lane by lane, from the CPU ms per tile measured here.

    Two lanes are one thread each: the loop (main thread, its decoding moved
    to workers) and the writer thread (checks, dispatch, status).  Decoding
    and the chunk pool's checksums and file writes spread over the other cores.
    """
    c = s["cpu"]
    limits = {
        "main thread (serial)": 1e3 / max(c["main thread, all"] - c["decode"], 1e-9),
        "writer thread (serial)": 1e3 / max(c["writer thread"], 1e-9),
        f"decode + chunk I/O on {cores - 2} cores": (cores - 2) * 1e3 / max(c["decode"] + c["chunk pool and other "
                                                                                        "threads"], 1e-9),
    }
    lane = min(limits, key=limits.get)
    return [f"    {k}: {v:,.0f} tiles/s" for k, v in limits.items()] + [
        f"    -> {min(limits.values()):,.0f} tiles/s, bound by {lane}; target {target:,.0f}: "
        f"{'met' if min(limits.values()) >= target else 'NOT met'}"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=600.0, help="the simulated device's tiles/s")
    p.add_argument("--tiles", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--decode-workers", type=int, default=0, help="DataLoader workers (0: decode in the loop)")
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--project-cores", type=int, default=16)
    p.add_argument("--compact", default="pca64-int8", help="the compact preset measured beside float16")
    p.add_argument("--host-encode", action="store_true", help="compact: the writer encodes on the host (CPU path)")
    p.add_argument("--only", choices=("float16", "compact"), default=None)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-host-rate-", dir=args.dir))
    layouts = {"float16": "float16", "compact": args.compact}
    if args.only:
        layouts = {args.only: layouts[args.only]}
    print(f"{args.tiles} tiles (half target_image.png, half .svs JPEG tiles), batch {args.batch_size}, "
          f"{args.decode_workers} decode workers, simulated device {args.rate:g} tiles/s; medians of "
          f"{args.rounds} rounds; disk under {work}", flush=True)
    try:
        for layout, preset in layouts.items():
            results: dict[tuple[str, str], list[dict]] = {}
            for r in range(args.rounds):
                for version in VERSIONS[r % 3:] + VERSIONS[: r % 3]:
                    for label, rate in (("at rate", args.rate), ("ceiling", float("inf"))):
                        source = bench_source(args.tiles, 256, args.stride)
                        with VERSIONS_SETUP[version]():
                            got = summarise(run_once(args, source, rate, preset, work / "s.zarr"), rate)
                        results.setdefault((version, label), []).append(got)
                        print(f"  {layout} round {r + 1} {version:13} {label}: {got['tiles_per_s']:6.1f} tiles/s, "
                              f"binds: {got['binds']}", flush=True)
            report(preset, results, args)
        decode_rates(args, bench_source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(preset: str, results: dict, args) -> None:
    from pathsegdiff.store import BlockSpec
    from pathsegdiff.store.encodings import parse_preset

    enc = parse_preset(preset)
    blocks = [BlockSpec(b, *REFERENCE_BLOCKS[b]) for b in ("up1", "up2")]
    per_t = sum(b.channels * b.height * b.width * 2 if enc.is_default else enc.stored_bytes(*b.shape) for b in blocks)
    where = "the writer thread's numpy encoder" if args.host_encode else "the device, beforehand"
    print(f"\n{preset}: {per_t * 2 / 1e6:.2f} MB of features per tile" + ("" if enc.is_default else f" (encoded by {where})"))
    keys = [(v, lbl) for v in VERSIONS for lbl in ("at rate", "ceiling")]
    med = {k: _median(results[k]) for k in keys}
    print(f"{'':34}" + "".join(f"{v:>16}" for v, _ in keys))
    print(f"{'':34}" + "".join(f"{lbl:>16}" for _, lbl in keys))
    print(f"{'tiles/s':34}" + "".join(f"{med[k]['tiles_per_s']:>16.1f}" for k in keys))
    print(f"{'device busy (at rate)':34}" + "".join(
        f"{med[k]['tiles_per_s'] / args.rate:>16.0%}" if k[1] == "at rate" else f"{'':>16}" for k in keys))
    print("wall ms per tile, by lane (the lanes overlap; the largest binds):")
    for lane in med[keys[-1]]["lanes"]:
        print(f"  {lane:32}" + "".join(f"{med[k]['lanes'].get(lane, 0.0):>16.2f}" for k in keys))
    print(f"  {'main thread waiting for writer':32}" + "".join(f"{med[k]['queue_wait']:>16.2f}" for k in keys))
    print("  binds: " + ", ".join(f"{v} {lbl}: {results[(v, lbl)][-1]['binds']}" for v, lbl in keys))
    print("store write, ms per tile (encode and io summed over the chunk pool's threads):")
    for stage in med[keys[0]]["store"]:
        print(f"  {stage:32}" + "".join(f"{med[k]['store'][stage]:>16.2f}" for k in keys))
    print("CPU ms per tile (thread_time):")
    for lane in med[keys[0]]["cpu"]:
        print(f"  {lane:32}" + "".join(f"{med[k]['cpu'][lane]:>16.2f}" for k in keys))
    for version in VERSIONS:
        print(f"  {version}: a {args.project_cores}-core host, from these CPU costs (2 cores for the loop and "
              "the writer):")
        print("\n".join(project(med[(version, "ceiling")], args.project_cores, args.rate)))


def _median(runs: list[dict]) -> dict:
    def walk(parts):
        first = parts[0]
        if isinstance(first, dict):
            return {k: walk([p.get(k, 0.0) for p in parts]) for k in first}
        if isinstance(first, str):
            return first
        return median(parts)

    return walk(runs)


if __name__ == "__main__":
    main()
