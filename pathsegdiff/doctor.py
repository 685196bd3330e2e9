"""``pathsegdiff doctor``: what is installed, which device, how much disk, and a self-test.

The self-test runs the whole chain on the untrained ``tiny`` model in a
temporary directory: extract two tiles, write them to a store, read them back
and verify the store.  It takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("torch", "diffusers", "zarr", "numcodecs", "dask", "xarray", "typer", "numpy", "scikit-image")
OPTIONAL = {  # import name -> (extra, what it enables)
    "tiffslide": ("wsi", "whole-slide images (.svs, .tif, .ndpi)"),
    "s3fs": ("remote", "s3:// stores"),
    "transformers": ("conditioning", "HIPT conditioning"),
    "h5py": ("conditioning", ".h5 precomputed embeddings"),
    "sklearn": ("dev", "tests against scikit-learn"),
}


@dataclass
class DoctorReport:
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def add(self, label: str, value: str) -> None:
        self.lines.append(f"{label:<14}{value}")


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def self_test(workdir: Path) -> str:
    """Extract two tiles with ``tiny``, store, reopen, verify; returns a one-line result."""
    import numpy as np
    import torch

    from pathsegdiff.extract.featurize import Featurizer
    from pathsegdiff.store import BlockSpec, FeatureSpec, StoreSchema, TileBatch, TileRecord, create_store, open_store
    from pathsegdiff.store.commands.verify import verify_store

    t0 = time.perf_counter()
    featurizer = Featurizer.load("tiny")
    ldm, cfg = featurizer.backbone, featurizer.cfg
    shapes = featurizer.block_shapes(64)
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    feats = featurizer(rgb, ["a", "b"]).features
    spec = FeatureSpec(ldm.model_id, ldm.weights_sha256, tuple(BlockSpec(b, *shapes[b]) for b in cfg.blocks),
                       cfg.timesteps, tile_size=64)
    path = workdir / "selftest.zarr"
    with create_store(path, StoreSchema(spec, n_tiles=2), [TileRecord("a"), TileRecord("b")]) as w:
        w.write([0, 1], TileBatch({t: {b: x.float().numpy() for b, x in d.items()} for t, d in feats.items()},
                                  rgb=rgb.numpy()))
    back = open_store(path).read_tile(1).features[cfg.timesteps[0]][cfg.blocks[0]]
    same = np.array_equal(back, feats[cfg.timesteps[0]][cfg.blocks[0]][1].numpy().astype(np.float16))
    rep = verify_store(path)
    if not (same and rep.ok):
        raise RuntimeError(f"read-back {'matches' if same else 'DIFFERS'}, verify {'ok' if rep.ok else rep.lines()}")
    return f"ok in {time.perf_counter() - t0:.1f} s (tiny model, 2 tiles, extract -> store -> read -> verify)"


def run_doctor(workdir: str | None = None, self_test_enabled: bool = True) -> DoctorReport:
    import torch

    from pathsegdiff import __version__

    rep = DoctorReport()
    rep.add("pathsegdiff", __version__)
    rep.add("python", f"{platform.python_version()} on {platform.system()} {platform.machine()}")
    for name in PACKAGES:
        rep.add(name, _version(name))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        dev = f"cuda: {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB"
        dev += ", bf16" if torch.cuda.is_bf16_supported() else ""
    else:
        dev = f"cpu only ({torch.get_num_threads()} threads); extraction runs, slowly; training heads is fine"
    rep.add("device", dev)
    where = Path(workdir or tempfile.gettempdir())
    free = shutil.disk_usage(where if where.exists() else Path.cwd()).free
    rep.add("free disk", f"{free / 2**30:,.1f} GiB under {where}")
    for mod, (extra, purpose) in OPTIONAL.items():
        try:
            importlib.import_module(mod)
            state = "yes"
        except ImportError:
            state = f"no  (pip install 'pathsegdiff[{extra}]')"
        rep.add(mod, f"{state:<5} {purpose}" if state == "yes" else f"{state} for {purpose}")
    if self_test_enabled:
        with tempfile.TemporaryDirectory(prefix="pathsegdiff-doctor-") as tmp:
            try:
                rep.add("self-test", self_test(Path(tmp)))
            except Exception as e:  # the doctor reports every failure rather than stopping
                rep.ok = False
                rep.add("self-test", f"FAILED: {type(e).__name__}: {e}")
    return rep
