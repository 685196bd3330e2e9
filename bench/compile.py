"""``--compile`` against eager: speed per tile, compile time, and the largest feature difference.

The same featurizer runs eagerly and through ``torch.compile`` (inductor,
channels-last inputs; pathsegdiff/extract/compiled.py) on the same random
256 px tiles, one tile at a time as the CPU path does.  The first compiled
call compiles (timed on its own line); then ``--rounds`` rounds alternate the
two and the medians of seconds per tile are printed side by side, with the
max relative difference of every block (|compiled - eager| / max |eager|).

    .venv/bin/python bench/compile.py                          # tiny model, a few minutes on 2 cores
    .venv/bin/python bench/compile.py --model reference --tiles 1 --rounds 2 --timesteps 50
    .venv/bin/python bench/compile.py --device cuda --model reference --tiles 64 --batch-size 32
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import torch


def main(argv: list[str] | None = None) -> None:
    from pathsegdiff.extract.backbones.tiny import build_reference_size, build_tiny
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "reference"), default="tiny")
    p.add_argument("--tiles", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1, help="tiles per call (the CPU path runs one at a time)")
    p.add_argument("--timesteps", default="50,150")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2-core machine is shared)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = build_tiny().to(args.device) if args.model == "tiny" else build_reference_size(args.device)
    cfg = FeatureConfig(timesteps=tuple(int(t) for t in args.timesteps.split(",")))
    eager = Featurizer(backbone, cfg)
    compiled = Featurizer(backbone, cfg, compile=True)
    rgb = torch.randint(0, 256, (args.tiles, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ids = [f"bench/{i}" for i in range(args.tiles)]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run(featurizer) -> float:
        sync()
        t = time.perf_counter()
        for a in range(0, args.tiles, args.batch_size):
            featurizer(rgb[a : a + args.batch_size], ids[a : a + args.batch_size], out_dtype=torch.float32)
        sync()
        return (time.perf_counter() - t) / args.tiles

    print(f"model {args.model}, {args.tiles} tiles of 256 px, batch {args.batch_size}, blocks "
          f"{','.join(cfg.blocks or backbone.default_blocks)}, t {args.timesteps}, {args.threads} threads, "
          f"{args.device}", flush=True)
    t = time.perf_counter()
    first = compiled(rgb[: args.batch_size], ids[: args.batch_size], out_dtype=torch.float32)
    print(f"first compiled call (compiles): {time.perf_counter() - t:.1f} s"
          + (f"; FAILED, eager instead: {compiled.compiled.failed}" if compiled.compiled.failed else ""), flush=True)
    reference = eager(rgb[: args.batch_size], ids[: args.batch_size], out_dtype=torch.float32)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        for name in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
            times[name].append(run(eager if name == "eager" else compiled))
        print(f"round {r + 1}: eager {times['eager'][-1]:.3f} s/tile, compiled {times['compiled'][-1]:.3f} s/tile",
              flush=True)
    e, c = median(times["eager"]), median(times["compiled"])
    print(f"\nmedian s/tile: eager {e:.3f}, compiled {c:.3f}; compiled / eager speed {e / c:.2f}x")
    diffs = {f"t{t} {b}": float((x - reference.features[t][b]).abs().max() / reference.features[t][b].abs().max())
             for t, d in first.features.items() for b, x in d.items()}
    diffs["latent"] = float((first.latent - reference.latent).abs().max() / reference.latent.abs().max())
    print("max relative difference, compiled vs eager: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
