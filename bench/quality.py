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
METRICS = (("miou", "mIoU"), ("mdice", "mDice"), ("pixel_accuracy", "pixel accuracy"),
           ("boundary_f1", "boundary F1 (2 px)"))


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
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=sys.stderr)
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
    columns = first.count("|") + 1 + len(names) + 2
    return [f"| {first} | " + " | ".join(names) + " | mIoU per seed | train time |", "|---" * columns + "|"]


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


def cells(blocks: list[str], timesteps: list[str], one_factor: bool = False) -> list[tuple[tuple, tuple]]:
    """Every block set x timestep set, the one-factor cells first (one block set with every timestep, every
    block with one timestep set), so that a sweep stopped early has the most telling part."""
    full_b, full_t = tuple(blocks), tuple(timesteps)
    grid = list(itertools.product(subsets(blocks), subsets(timesteps)))
    first = [(b, full_t) for b in subsets(blocks) if b != full_b] + [(full_b, t) for t in subsets(timesteps)]
    return first if one_factor else first + [c for c in grid if c not in first]


def ablation(stores: dict[str, str], work: Path, epochs: int, runs: int, blocks: list[str] | None,
             timesteps: list[str] | None, plot: str | None = None, one_factor: bool = False) -> str:
    """fcn on each cell of each store; the cell with every block and timestep is the heads table's fcn run."""
    from pathsegdiff.store import open_store

    fs = open_store(next(iter(stores.values())))
    blocks, timesteps = blocks or list(fs.blocks), timesteps or [str(x) for x in fs.timesteps]
    found, rows = {}, {}
    for b, t in cells(blocks, timesteps, one_factor):
        for i, (name, store) in enumerate(stores.items()):
            cell = f"{name}-{'+'.join(b)}-t{'+'.join(t)}"
            full = (list(b), list(t)) == (list(fs.blocks), [str(x) for x in fs.timesteps])
            run = work / "runs" / f"{name}-fcn" if full else work / "ablation" / cell
            res = train(store, run, epochs, runs, "--head", "fcn", "--blocks", ",".join(b),
                        "--timesteps", ",".join(t))
            found[(name, "+".join(b), "+".join(t))] = test_metrics(res)["miou"]
            rows[(i, len(b), b, len(t), tuple(int(x) for x in t))] = row(f"{name} | {'+'.join(b)} | {'+'.join(t)}",
                                                                         run, res)
    if plot:
        plot_ablation(found, Path(plot))
    return "\n".join(header("model | blocks | timesteps") + [rows[k] for k in sorted(rows)])


def plot_ablation(found: dict[tuple[str, str, str], tuple], out: Path) -> None:
    """Test mIoU ± sd per block set x timestep set, one bar per store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k[0] for k in found))
    labels = list(dict.fromkeys(f"{k[1]}\nt = {k[2]}" for k in sorted(found, key=lambda k: (len(k[1]), k[1],
                                                                                               len(k[2]), k[2]))))
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys, es = [], [], []
        for j, label in enumerate(labels):
            b, t = label.split("\nt = ")
            if (name, b, t) in found:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(found[(name, b, t)][0])
                es.append(found[(name, b, t)][1])
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=name)
        for x, y, e in zip(xs, ys, es):
            ax.text(x, y + e + 0.01, f"{y:.3f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("test mIoU (fcn, mean ± sd of 3 seeds)")
    ax.set_ylim(0, 1)
    ax.set_title("Demo store: block and timestep ablation", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


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
            q.add_argument("--plot", help="draw the cells' mIoU into this PNG")
            q.add_argument("--one-factor", action="store_true",
                           help="only the cells that change one factor from every block and timestep")
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
                       a.timesteps.split(",") if a.timesteps else None, a.plot, a.one_factor))
    echo(f"{a.step}: {time.perf_counter() - t0:.0f} s ({load()})")


if __name__ == "__main__":
    main()
