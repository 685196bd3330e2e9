"""``bench/compact.py --quality``: the compact presets on the demo stores, bytes per tile against mIoU loss.

For each store (the demo's tiles with he-tiny and with the seeded tiny model, bench/quality.py) and each
compact preset that store accepts (pcaK only where K is below a block's channels, as ``store compact``
requires): a copy made with ``pathsegdiff store compact`` (the seeded calibration sample of 32 tiles),
its feature bytes per tile on disk (PCA bases included) and the ratio to float16, the relative error
||x - x'|| / ||x|| of the features read back per block, and, for the presets in ``trained``, the fcn head
trained with the demo's settings (``pathsegdiff train --epochs 15 --runs 3``, test split) compared to
the same head on the float16 store (``pathsegdiff compare``: delta in points, ± the sd of the per-seed
differences; "within" when |delta| <= max(0.5 pt, the larger seed spread)).

The float16 runs are ``WORK/runs/NAME-fcn``, the same run directories as bench/quality.py's heads table,
so a run trained there is reused (and the other way round); compact copies and their runs are kept
under ``WORK/compact/`` and reused on a rerun.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pca_spectrum import plot as plot_spectrum, spectra, table as spectrum_table  # bench/pca_spectrum.py
from quality import demo_store, load, test_metrics, train  # bench/quality.py, beside this file

QUALITY_PRESETS = ("int8", "pca32", "pca32-int8", "pca16", "pca16-int8", "pca8", "pca8-int8", "pca4-int8")
QUALITY_TRAINED = ("int8", "pca32-int8", "pca16-int8", "pca8-int8", "pca4-int8")
TOLERANCE = 0.5  # points


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def feature_bytes(store: Path) -> int:
    """Bytes on disk of the features and what decoding them needs (scale/offset, PCA bases)."""
    return sum(dir_bytes(store / g) for g in ("features", "pca"))


def accepts(store: str, preset: str) -> bool:
    """``store compact`` takes a pcaK preset only when some block has more than K channels."""
    from pathsegdiff.store import open_store
    from pathsegdiff.store.encodings import parse_preset

    enc = parse_preset(preset)
    return not enc.uses_pca or any(b.channels > enc.components for b in open_store(store).schema.features.blocks)


def compact_copy(float16: str, path: Path, preset: str, echo) -> dict:
    """The ``preset`` copy of ``float16`` (made unless ``path`` holds it): bytes per tile, error per block."""
    from pathsegdiff.store import open_store
    from pathsegdiff.store.commands.compact import compact_store
    from pathsegdiff.store.encodings import relative_error

    if preset == "float16":
        path = Path(float16)
    elif not (path / "zarr.json").is_file():
        t0 = time.perf_counter()
        compact_store(float16, str(path), preset, overwrite=True)
        echo(f"$ pathsegdiff store compact {float16} -o {path} --compact {preset}    "
             f"({time.perf_counter() - t0:.0f} s, {load()})")
    src, fs = open_store(float16), open_store(path)
    idx = [int(i) for i in src.written()]
    errors = {b: float(np.mean([relative_error(np.stack([src.read_features(i, t, b) for i in idx]),
                                               np.stack([fs.read_features(i, t, b) for i in idx]))
                                for t in src.timesteps])) for b in src.blocks}
    return {"store": str(path), "bytes": feature_bytes(path) / len(idx), "error": errors}


def store_table(name: str, float16: str, presets: list[str], trained: list[str], work: Path, epochs: int,
                seeds: int, echo) -> tuple[str, list[dict]]:
    from pathsegdiff.train_head.compare import compare_runs

    presets = [p for p in presets if accepts(float16, p)]
    base_run = work / "runs" / f"{name}-fcn"
    base = test_metrics(train(float16, base_run, epochs, seeds, "--head", "fcn"))["miou"] \
        if set(trained) & set(presets) else None
    rows = []
    for preset in ["float16", *presets]:
        r = {"preset": preset, **compact_copy(float16, work / "compact" / f"{name}-{preset}.zarr", preset, echo)}
        if preset == "float16":
            r["miou"], r["delta"] = base, None
        elif preset in trained:
            run = work / "compact" / "runs" / f"{name}-{preset}-fcn"
            r["miou"] = test_metrics(train(r["store"], run, epochs, seeds, "--head", "fcn"))["miou"]
            r["delta"] = compare_runs(base_run, run, TOLERANCE).delta("miou")
        rows.append(r)
        echo(f"{name} {preset}: {r['bytes'] / 2**10:.0f} KiB/tile, errors {r['error']}")
    ref = rows[0]["bytes"]
    blocks = list(rows[0]["error"])
    lines = [f"| preset | bytes/tile | ratio | rel. error {' / '.join(blocks)} | fcn mIoU | Δ mIoU (points) | "
             f"within max({TOLERANCE} pt, seed sd) |", "|---" * 7 + "|"]
    for r in rows:
        m, d = r.get("miou"), r.get("delta")
        cells = [r["preset"], f"{r['bytes'] / 2**10:.0f} KiB", f"{ref / r['bytes']:.1f}x",
                 " / ".join(f"{r['error'][b]:.3f}" for b in blocks),
                 "-" if m is None else f"{m[0]:.3f} ± {m[1]:.3f}",
                 "-" if d is None else f"{d.delta:+.1f} ± {d.paired_std or 0:.1f}",
                 "-" if d is None else ("yes" if d.within() else "no")]
        lines.append("| " + " | ".join(cells) + " |")
        r["ratio"] = ref / r["bytes"]
    return "\n".join(lines), rows


def plot_tradeoff(results: dict[str, list[dict]], out: Path) -> None:
    """Compression ratio (log) against the fcn mIoU delta to float16, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rows in results.items():
        pts = [(r["ratio"], r["delta"].delta, r["delta"].paired_std or 0, r["preset"]) for r in rows if r.get("delta")]
        pts = [(1.0, 0.0, 0.0, "float16"), *sorted(pts)]
        x, y, e, labels = zip(*pts)
        line = ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
        for xi, yi, lab in zip(x, y, labels):
            ax.annotate(lab, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line[0].get_color())
    ax.axhspan(-TOLERANCE, TOLERANCE, color="0.9", zorder=0, label=f"± {TOLERANCE} pt")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression ratio against float16 (feature bytes per tile)")
    ax.set_ylabel("Δ test mIoU vs float16 (points, fcn, 3 seeds)")
    ax.set_title("Compact presets on the demo stores: bytes against mIoU loss", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def quality(stores: dict[str, str], presets: list[str], trained: list[str], work: Path, epochs: int, seeds: int,
            echo, plot: str | None = None, spectrum_plot: str | None = None) -> str:
    """Markdown: one table per store, then their PCA spectra.  ``stores`` empty: extract the demo's tiles
    with he-tiny and tiny into ``work`` first."""
    if not stores:
        for model in ("he-tiny", "tiny"):
            path = work / f"demo-{model}.zarr"
            if not (path / "zarr.json").is_file():
                demo_store(model, path)
            stores[model] = str(path)
    out, results = [], {}
    for name, path in stores.items():
        text, results[name] = store_table(name, path, presets, trained, work, epochs, seeds, echo)
        out += [f"**{name}** (`{path}`)", "", text, ""]
    if plot:
        plot_tradeoff(results, Path(plot))
    all_spectra = {name: spectra(path) for name, path in stores.items()}
    if spectrum_plot:
        plot_spectrum(all_spectra, Path(spectrum_plot))
    out += ["PCA spectrum (store compact's calibration sample, K = every channel):", "",
            spectrum_table(all_spectra), ""]
    return "\n".join(out)
