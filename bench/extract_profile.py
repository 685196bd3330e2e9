"""Where the extraction time goes when nothing overlaps: a synchronous batched loop, one timer per stage.

The stages (decode, conditioning, VAE encode, UNet + noise, cast + device to
host, store write) add up to the loop's wall time: conditioning and the VAE
are timed inside the Featurizer's call (their methods wrapped), the UNet +
noise line is the rest of that call.  Printed by ``bench/extract.py --profile``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from workload import bench_source, sync  # bench/workload.py, beside this file

STAGES = ("decode", "conditioning", "vae_encode", "unet_and_noise", "cast_to_host", "write")


def run_profile(args, featurizer, store: Path) -> dict:
    """Synchronous batched loop, one timer per stage: where the time goes when nothing overlaps."""
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.describe import build_schema
    from pathsegdiff.store import TileBatch, open_or_create

    source = bench_source(args.tiles, args.tile_size, args.stride)
    cfg = ExtractConfig(features=featurizer.cfg, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    schema = build_schema(source, featurizer, cfg)
    stages = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(name: str):
        sync(args.device)
        t = time.perf_counter()
        yield
        sync(args.device)
        stages[name] += time.perf_counter() - t

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            with stage(name):
                return fn(*a, **kw)
        return wrapper

    # conditioning and the VAE run inside the featurizer: time them from there (an instance
    # attribute shadows the method; removed again below)
    backbone, conditioner = featurizer.backbone, featurizer.conditioner
    backbone.encode = timed("vae_encode", backbone.encode)
    conditioner.embed = timed("conditioning", conditioner.embed)
    t0 = time.perf_counter()
    try:
        with open_or_create(store, schema, source.records, {"bench": "profile"}, overwrite=True) as w:
            for a in range(0, len(source), args.batch_size):
                idx = list(range(a, min(a + args.batch_size, len(source))))
                ids = [source.records[i].tile_id for i in idx]
                with stage("decode"):
                    rgb = torch.from_numpy(np.stack([source.load(i).rgb for i in idx]))
                inner = stages["vae_encode"] + stages["conditioning"]
                with stage("unet_and_noise"):
                    out = featurizer(rgb, ids)
                stages["unet_and_noise"] -= stages["vae_encode"] + stages["conditioning"] - inner  # on their own lines
                with stage("cast_to_host"):
                    host = {t: {b: x.to(torch.float16).cpu().numpy() for b, x in d.items()}
                            for t, d in out.features.items()}
                    ssl_host = out.ssl.float().cpu().numpy() if schema.ssl_dim else None
                with stage("write"):
                    w.write(idx, TileBatch(host, rgb=rgb.numpy(), ssl=ssl_host))
    finally:
        del backbone.encode, conditioner.embed
    return {"tiles": len(source), "seconds": time.perf_counter() - t0, "stages": stages}
