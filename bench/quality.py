"""he-tiny against the seeded tiny model on the demo's held-out tiles (issue 23 item 3, docs/he-tiny.md "Quality").

Three steps, each resumable (a run whose ``results.json`` exists is not trained again):

    python bench/quality.py store --model tiny -o /tmp/quality/demo_tiny/features.zarr
        the demo's extraction (pathsegdiff/demo.py: the bundled slide, 256 px tiles every 128 px at 0.5 um/px,
        at least 25 % tissue, stain-derived labels, the model's default blocks and timesteps) with another model
    python bench/quality.py heads --store he=/tmp/demo_he/features.zarr --store tiny=STORE --work /tmp/quality
        fcn and linear on each store, and a head on the stored RGB alone (bench/rgb_only_head.py), 3 seeds each
    python bench/quality.py ablation --store he=... --store tiny=... --work /tmp/quality
        fcn on every subset of the stores' blocks x every subset of their timesteps, 3 seeds each

Every training is ``pathsegdiff train STORE -o RUN --epochs 15 --runs 3`` (the demo's settings: its 15 epochs,
the defaults otherwise), run one after another in a subprocess with one torch thread; the table (test split,
mean ± sd over the seeds) goes to stdout, the commands and timings to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PATHSEGDIFF = Path(sys.executable).with_name("pathsegdiff")
RGB_HEAD = f"{BENCH / 'rgb_only_head.py'}:RGBOnly"
METRICS = (("miou", "mIoU"), ("mdice", "mDice"), ("pixel_accuracy", "pixel accuracy"))


def echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def demo_store(model: str, out: Path) -> None:
    """The demo's tiles, labels and split with ``model`` (the demo's step 2 alone: no head, no prediction)."""
    from pathsegdiff.demo import DemoConfig
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.tiles.stain_labels import StainLabelledSource
    from pathsegdiff.tiles.wsi import SlideSource

    cfg = DemoConfig(model=model)
    source = StainLabelledSource(SlideSource(Path(cfg.slide), tile_size=cfg.tile_size, stride=cfg.stride,
                                             target_mpp=0.5, min_tissue=cfg.min_tissue))
    t0 = time.perf_counter()
    summary = run_extraction(source, out, ExtractConfig(model=model), echo=echo)
    echo(f"{summary.line()} ({time.perf_counter() - t0:.0f} s, {load()})")


def train(store: str, run: Path, epochs: int, runs: int, *extra: str) -> dict:
    """``pathsegdiff train`` once (skipped when ``run`` holds results); the run's results.json."""
    if not (run / "results.json").is_file():
        cmd = [str(PATHSEGDIFF), "train", store, "-o", str(run), "--epochs", str(epochs), "--runs", str(runs),
               "--quiet", "--overwrite", *extra]
        echo("$ " + " ".join(cmd).replace(str(PATHSEGDIFF), "pathsegdiff") + f"    ({load()})")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        seconds = time.perf_counter() - t0
        (run / "bench_time.json").write_text(json.dumps({"seconds": seconds, "load_after": os.getloadavg()}))
        echo(f"  {run.name}: {seconds:.0f} s ({load()})")
    return json.loads((run / "results.json").read_text())


def test_metrics(results: dict) -> dict[str, tuple[float, float, list[float]]]:
    """metric -> (mean, sd over the seeds, per seed) on the evaluated split (test)."""
    assert results["split"] == "test", results["split"]
    return {key: (float(results[key]), float(results["std"][key] or 0.0),
                  [float(r[key]) for r in results["per_run"]]) for key, _ in METRICS}


def seconds(run: Path) -> str:
    f = run / "bench_time.json"
    return f"{json.loads(f.read_text())['seconds'] / 60:.1f} min" if f.is_file() else "-"


def row(label: str, run: Path, results: dict) -> str:
    m = test_metrics(results)
    cells = [f"{m[k][0]:.3f} ± {m[k][1]:.3f}" for k, _ in METRICS]
    seeds = ", ".join(f"{x:.3f}" for x in m["miou"][2])
    return f"| {label} | " + " | ".join(cells) + f" | {seeds} | {seconds(run)} |"


def header(first: str) -> list[str]:
    names = [name for _, name in METRICS]
    return [f"| {first} | " + " | ".join(names) + " | mIoU per seed | train time |", "|---" * (len(names) + 3) + "|"]


def heads(stores: dict[str, str], work: Path, epochs: int, runs: int) -> str:
    lines = header("features | head")
    for (name, store), head in itertools.product(stores.items(), ("fcn", "linear")):
        run = work / "runs" / f"{name}-{head}"
        lines.append(row(f"{name} | {head}", run, train(store, run, epochs, runs, "--head", head)))
    name, store = next(iter(stores.items()))
    run = work / "runs" / "rgb-only"
    lines.append(row("RGB alone (colour-only ceiling) | rgb_only_head.py:RGBOnly", run,
                     train(store, run, epochs, runs, "--head", RGB_HEAD)))
    return "\n".join(lines)


def subsets(items: list) -> list[tuple]:
    return [c for n in range(1, len(items) + 1) for c in itertools.combinations(items, n)]


def ablation(stores: dict[str, str], work: Path, epochs: int, runs: int, blocks: list[str] | None,
             timesteps: list[str] | None) -> str:
    from pathsegdiff.store import open_store

    lines = header("model | blocks | timesteps")
    for name, store in stores.items():
        fs = open_store(store)
        for b, t in itertools.product(subsets(blocks or list(fs.blocks)),
                                      subsets(timesteps or [str(x) for x in fs.timesteps])):
            run = work / "ablation" / f"{name}-{'+'.join(b)}-t{'+'.join(t)}"
            res = train(store, run, epochs, runs, "--head", "fcn", "--blocks", ",".join(b),
                        "--timesteps", ",".join(t))
            lines.append(row(f"{name} | {'+'.join(b)} | {'+'.join(t)}", run, res))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("store", help="the demo's extraction with another model")
    s.add_argument("--model", default="tiny")
    s.add_argument("-o", "--out", required=True)
    for name in ("heads", "ablation"):
        q = sub.add_parser(name)
        q.add_argument("--store", action="append", required=True, help="NAME=STORE, in table order")
        q.add_argument("--work", default="/tmp/quality")
        q.add_argument("--epochs", type=int, default=15, help="the demo's 15")
        q.add_argument("--runs", type=int, default=3)
        if name == "ablation":
            q.add_argument("--blocks", help="comma-separated; default: the store's")
            q.add_argument("--timesteps", help="comma-separated; default: the store's")
    a = p.parse_args()
    if a.step == "store":
        demo_store(a.model, Path(a.out))
        return
    stores = dict(x.split("=", 1) for x in a.store)
    work = Path(a.work)
    t0 = time.perf_counter()
    if a.step == "heads":
        print(heads(stores, work, a.epochs, a.runs))
    else:
        print(ablation(stores, work, a.epochs, a.runs, a.blocks.split(",") if a.blocks else None,
                       a.timesteps.split(",") if a.timesteps else None))
    echo(f"{a.step}: {time.perf_counter() - t0:.0f} s ({load()})")


if __name__ == "__main__":
    main()
