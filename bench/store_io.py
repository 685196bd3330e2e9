"""Store I/O benchmark: the feature store against raw .npy files of the same bytes, on the same disk.

Default shapes are the reference model's default selection (``up1``
576x32x32 + ``up2`` 384x64x64 at t = 50 and 150, float16: 8.65 MB per tile,
the reference model's figures), and the same tiles in a compact preset
(``--compact``, default ``pca64-int8``: PCA bases fitted on the first
tiles, the store encoding each batch as extraction does).  Each round
measures, in rotating order so that no contestant always runs first on the
loaded machine:

  - ``np.save`` / ``np.load``: one file per array per tile, in one folder
    (for a compact preset: the arrays the store holds, already encoded).
    Reads are timed two ways: ``kept`` holds a tile's arrays together, as any
    reader of a tile does (the allocator then hands back fresh pages, which
    the kernel must fault in); ``dropped`` frees each array before loading
    the next (the old benchmark's loop: the same memory is reused).
  - ``store before``: the store as it was: every chunk through zarr's codec
    pipeline and event loop (``direct_io = False``) and ``np.isfinite``
    checks (both faster checks are also timed on their own, below).
    with '/' chunk keys (``c/17/0/0/0``), as stores were then.
  - ``store, '/' keys``: chunk_io.py in a store with the old '/' keys (three
    directories per array per tile).
  - ``store``: the default: chunk_io.py, '.' keys (``c.17.0.0.0``).

Writes are whole batches of 8 tiles through ``StoreWriter.write`` (checks,
checksums, status included; a compact store gets the arrays already encoded,
as a GPU run hands them over, and the host's numpy encoder is timed apart); reads are random single tiles through
``FeatureStore.read_tile`` (status check and checksums included).  Medians
over the rounds are printed with the ratio to ``np.save`` / ``np.load`` of
the same round, and CPU ms per tile (``process_time``: the cores a tile rate
costs, steadier than wall time on a shared machine).  Reads are from the page
cache on both sides.  ``--codecs`` adds the compression ratio and speed of
each store codec on feature-like data.

    .venv/bin/python bench/store_io.py                       # about 2 minutes on 2 cores
    .venv/bin/python bench/store_io.py --tiles 64 --rounds 7 --dir /mnt/nvme
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import zarr

from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store, open_store
from pathsegdiff.store.batch_check import finite_rows
from pathsegdiff.store.encoded import StoreEncoding
from pathsegdiff.store.encodings import bases_sha256, fit_bases, parse_preset
from pathsegdiff.store.reader import FeatureStore
from pathsegdiff.store.schema import CODECS

REFERENCE = (BlockSpec("up1", 576, 32, 32), BlockSpec("up2", 384, 64, 64))
TIMESTEPS = (50, 150)
BATCH = 8


def feature_like(rng: np.random.Generator, blocks, n: int, timesteps=TIMESTEPS) -> dict[int, dict[str, np.ndarray]]:
    """Smooth random fields through SiLU with per-channel scales (skewed, many near-zero values), float16."""
    from scipy.ndimage import gaussian_filter

    out: dict[int, dict[str, np.ndarray]] = {}
    for t in timesteps:
        out[t] = {}
        for b in blocks:
            x = rng.standard_normal((n, *b.shape), dtype=np.float32)
            x = gaussian_filter(x, sigma=(0, 0, 1.5, 1.5)) * 4 * rng.lognormal(0, 1, (1, b.channels, 1, 1))
            out[t][b.name] = (x / (1 + np.exp(-x))).astype(np.float16)
    return out


@contextlib.contextmanager
def slash_keys():
    """Stores created inside use '/' chunk keys (``c/17/0/0/0``), as stores did before the '.' keys."""
    create = zarr.Group.create_array

    def with_slashes(self, *args, **kwargs):
        return create(self, *args, **{**kwargs, "chunk_key_encoding": {"name": "default", "separator": "/"}})

    zarr.Group.create_array = with_slashes
    try:
        yield
    finally:
        zarr.Group.create_array = create


@contextlib.contextmanager
def before_chunk_io():
    """The store as before chunk_io.py: zarr's codec pipeline for every chunk, ``np.isfinite`` checks."""
    from pathsegdiff.store import batch_check

    bit_test = batch_check.finite_rows
    batch_check.finite_rows = lambda a: np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    FeatureStore.direct_io = False
    try:
        yield
    finally:
        batch_check.finite_rows = bit_test
        FeatureStore.direct_io = True


def timed(fn) -> tuple[float, float]:
    """(wall s, cpu s) of ``fn()``."""
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_npy(root: Path, feats: dict, n: int, reads: np.ndarray) -> dict:
    path = root / "npy"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    names = [(t, b) for t, d in feats.items() for b in d]

    def write():
        for i in range(n):
            for t, b in names:
                np.save(path / f"{i}_t{t}_{b}.npy", feats[t][b][i])

    def read_kept():
        for i in reads:
            tile = [np.load(path / f"{i}_t{t}_{b}.npy") for t, b in names]  # noqa: F841 (held, as a reader does)

    def read_dropped():
        for i in reads:
            for t, b in names:
                np.load(path / f"{i}_t{t}_{b}.npy")

    out = {"write": timed(write), "read": timed(read_kept), "read_dropped": timed(read_dropped)}
    shutil.rmtree(path)
    return out


def compact_bases(blocks, feats: dict, preset: str) -> tuple[FeatureSpec, dict]:
    """The feature spec of ``preset`` and its PCA bases, fitted on the first 8 tiles (extraction's calibration)."""
    spec = FeatureSpec("bench", "0" * 64, blocks, tuple(feats), encoding=preset)
    if not parse_preset(preset).uses_pca:
        return spec, {}
    k = parse_preset(preset).stored_channels(blocks[0].channels)
    bases = fit_bases({(t, b): x[:8] for t, d in feats.items() for b, x in d.items()}, k)
    return replace(spec, basis_sha256=bases_sha256(bases)), bases


def encoded_arrays(spec: FeatureSpec, bases: dict, feats: dict) -> dict[str, dict[str, np.ndarray]]:
    """What a store of ``spec`` holds for ``feats``, as {array path: {"": (n, ...) array}} for bench_npy."""
    enc = StoreEncoding(spec, bases)
    flat = enc.feature_arrays({t: {b: x.astype(np.float32) for b, x in d.items()} for t, d in feats.items()})
    return {name.replace("/", "_"): {"": x} for name, x in enc.encode(flat).items()}


def bench_store(root: Path, blocks, feats: dict, n: int, reads: np.ndarray, direct: bool, slashes: bool,
                codec: str = "none", compact: tuple[FeatureSpec, dict] | None = None) -> dict:
    path = root / "store.zarr"
    shutil.rmtree(path, ignore_errors=True)
    last = (max(feats), blocks[-1].name)
    spec, bases = compact or (FeatureSpec("bench", "0" * 64, blocks, tuple(feats), codec=codec), {})
    schema = StoreSchema(spec, n_tiles=n, store_rgb=False)
    with contextlib.ExitStack() as stack:
        if not direct:
            stack.enter_context(before_chunk_io())
        if slashes:
            stack.enter_context(slash_keys())
        return _bench_store(path, schema, bases, feats, n, reads, last, codec)


def _bench_store(path: Path, schema, bases: dict, feats: dict, n: int, reads: np.ndarray, last, codec: str) -> dict:
    try:
        w = create_store(path, schema, [TileRecord(f"t{i}") for i in range(n)], bases=bases or None)
        # A compact store is handed the arrays encoded where the features were made (on a GPU:
        # extract/device_encoding.py), so both sides write the same bytes; the host's own encoder is timed apart.
        encoded = None if w.encoding.is_default else w.encoding.encode(w.encoding.feature_arrays(feats))

        def write():
            for a in range(0, n, BATCH):
                part = range(a, min(a + BATCH, n))
                if encoded is None:
                    w.write(part, TileBatch({t: {b: x[a : a + BATCH] for b, x in d.items()} for t, d in feats.items()}))
                else:
                    w.write(part, TileBatch({}), encoded={k: x[a : a + BATCH] for k, x in encoded.items()})

        out = {"write": timed(write), "stages": dict(w.timings)}
        w.close()
        fs = open_store(path)
        fs.read_tile(0, extras=False)  # open the arrays once, as a DataLoader worker would
        stored = [n for t in schema.features.timesteps for b in fs.blocks for n in fs.encoding.stored_arrays(t, b)]

        def read():  # the stored arrays of a tile (a compact store's codes, before decoding), as np.load's side
            for i in reads:
                tile = fs.read_arrays(stored, int(i))  # noqa: F841 (held until the next, as np.load's side)

        def read_decoded():
            for i in reads:
                tile = fs.read_tile(int(i), extras=False)  # noqa: F841

        out["read"] = timed(read)
        if encoded is not None:
            flat = w.encoding.feature_arrays(feats)
            out["host_encode"] = timed(lambda: [w.encoding.encode({k: x[a : a + BATCH] for k, x in flat.items()})
                                                for a in range(0, n, BATCH)])
        out["read_decoded"] = timed(read_decoded) if schema.features.encoding != "float16" else out["read"]
        back = fs.read_tile(n - 1, extras=False).features[last[0]][last[1]]
        lossless = not codec.startswith("bitround") and schema.features.encoding == "float16"
        assert np.array_equal(back, feats[last[0]][last[1]][n - 1]) or not lossless
        out["bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return out


CONTESTANTS = {  # name: (chunk_io.py, '/' chunk keys)
    "store before": (False, True),
    "store, '/' keys": (True, True),
    "store": (True, False),
}


def run_shapes(label: str, blocks, args, root: Path, preset: str = "float16") -> None:
    rng = np.random.default_rng(0)
    feats = feature_like(rng, blocks, args.tiles)
    compact = compact_bases(blocks, feats, preset) if preset != "float16" else None
    saved = encoded_arrays(*compact, feats) if compact else feats  # np.save's side: the bytes the store holds
    mb = sum(x[0].nbytes for d in saved.values() for x in d.values()) / 1e6
    reads = rng.integers(0, args.tiles, args.reads)
    rounds: list[dict] = []
    names = ["npy", *CONTESTANTS]
    for r in range(args.rounds):
        got = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            got[name] = (bench_npy(root, saved, args.tiles, reads) if name == "npy" else
                         bench_store(root, blocks, feats, args.tiles, reads, *CONTESTANTS[name], compact=compact))
        rounds.append(got)
        print(f"  {label} round {r + 1}: " + ", ".join(
            f"{k} {args.tiles / v['write'][0]:.0f}/{len(reads) / v['read'][0]:.0f}" for k, v in got.items()), flush=True)

    def med(name: str, key: str, i: int = 0) -> float:
        return statistics.median(g[name][key][i] for g in rounds)

    def ratio(name: str, key: str, base: str) -> float:
        return statistics.median(g["npy"][base][0] / g[name][key][0] for g in rounds)

    n, k = args.tiles, len(reads)
    print(f"\n{label}: {mb:.2f} MB per tile ({' + '.join(f'{b.name} {b.channels}x{b.height}x{b.width}' for b in blocks)}"
          f" at t {', '.join(map(str, TIMESTEPS))}, {preset}); {n} tiles in batches of {BATCH}, {k} random reads, "
          f"median of {args.rounds} rounds")
    print(f"{'':22}{'write t/s':>10}{'x save':>8}{'cpu ms':>8}{'read t/s':>10}{'x load':>8}{'x drop':>8}{'cpu ms':>8}")
    print(f"{'np.save / np.load':22}{n / med('npy', 'write'):>10.0f}{1:>8.2f}{med('npy', 'write', 1) / n * 1e3:>8.2f}"
          f"{k / med('npy', 'read'):>10.0f}{1:>8.2f}{ratio('npy', 'read', 'read_dropped'):>8.2f}"
          f"{med('npy', 'read', 1) / k * 1e3:>8.2f}")
    print(f"{'np.load, dropped':22}{'':>26}{k / med('npy', 'read_dropped'):>10.0f}"
          f"{ratio('npy', 'read_dropped', 'read'):>8.2f}{1:>8.2f}{med('npy', 'read_dropped', 1) / k * 1e3:>8.2f}")
    for name in CONTESTANTS:
        print(f"{name:22}{n / med(name, 'write'):>10.0f}{ratio(name, 'write', 'write'):>8.2f}"
              f"{med(name, 'write', 1) / n * 1e3:>8.2f}{k / med(name, 'read'):>10.0f}{ratio(name, 'read', 'read'):>8.2f}"
              f"{ratio(name, 'read', 'read_dropped'):>8.2f}{med(name, 'read', 1) / k * 1e3:>8.2f}")
    if preset != "float16":
        encode = statistics.median(g["store"]["host_encode"][1] for g in rounds)
        print(f"{'host numpy encoder':22}{n / encode:>10.0f}{'':>8}{encode / n * 1e3:>8.2f}"
              "   (what a CPU run's writer pays; a GPU run encodes on the device)")
        print(f"{'store, read_tile':22}{'':>26}{k / med('store', 'read_decoded'):>10.0f}"
              f"{ratio('store', 'read_decoded', 'read'):>8.2f}{'':>8}{med('store', 'read_decoded', 1) / k * 1e3:>8.2f}"
              "   (decoded to float32 features)")
    stages = rounds[-1]["store"]["stages"]
    print("store write stages, last round, ms per tile (encode and io summed over threads): "
          + ", ".join(f"{s} {stages.get(s, 0.0) / n * 1e3:.2f}" for s in ("validate", "compact", "encode", "io", "chunks", "status")))


def finiteness(args) -> None:
    x = feature_like(np.random.default_rng(1), REFERENCE, 4)
    arrays = [a for d in x.values() for a in d.values()]
    old = min(timed(lambda: [np.isfinite(a.reshape(len(a), -1)).all(axis=1) for a in arrays])[1] for _ in range(5))
    new = min(timed(lambda: [finite_rows(a) for a in arrays])[1] for _ in range(5))
    print(f"\nfiniteness check, reference tile, cpu ms per tile: np.isfinite {old / 4 * 1e3:.2f}, "
          f"exponent bit test {new / 4 * 1e3:.2f} ({old / new:.1f}x)")


def codecs(args, root: Path) -> None:
    blocks = (BlockSpec("up4", 576, 16, 16), BlockSpec("up7", 384, 32, 32), BlockSpec("up10", 192, 64, 64))
    rng = np.random.default_rng(0)
    feats = feature_like(rng, blocks, 16, timesteps=(50,))
    raw = sum(x.nbytes for x in feats[50].values())
    reads = rng.integers(0, 16, 32)
    print(f"\ncodecs on feature-like float16 ({raw / 16 / 1e6:.2f} MB per tile, 16 tiles):")
    for codec in CODECS:
        r = bench_store(root, blocks, feats, 16, reads, True, False, codec)
        print(f"  {codec:<16} write {16 / r['write'][0]:7.0f} t/s  read {len(reads) / r['read'][0]:7.0f} t/s  "
              f"ratio {raw / r['bytes']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=32)
    ap.add_argument("--reads", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="Directory on the disk to measure (default: system temp).")
    ap.add_argument("--codecs", action="store_true", help="also each codec's ratio and speed")
    ap.add_argument("--compact", default="pca64-int8", help="the compact preset measured beside float16")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pathsegdiff-bench-", dir=args.dir))
    print(f"disk under {root}")
    try:
        run_shapes("float16, reference shapes", REFERENCE, args, root)
        run_shapes(f"{args.compact}, reference shapes", REFERENCE, args, root, args.compact)
        finiteness(args)
        if args.codecs:
            codecs(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n'x save' / 'x load': throughput over np.save / np.load (kept) of the same round; 'x drop': over "
          "np.load with each array dropped at once.  cpu ms: process CPU time per tile, all threads.")


if __name__ == "__main__":
    main()
