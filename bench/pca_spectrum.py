"""The PCA spectrum of stored features: explained variance against K, per block and timestep, for several stores.

The bases are fitted exactly as ``pathsegdiff store compact --compact pcaK`` fits them (``fit_store_bases``:
the same seeded calibration tiles and pixels, float64), with K = every channel, so the curve at K says how
much of the calibration variance a ``pcaK`` preset keeps.  Prints, per store, block and timestep, the K that
keeps 90 / 95 / 99 % and the share kept at K = 4, 8, 16, 32; draws the cumulative curves, one panel per
block, one line per store and timestep.

    python bench/pca_spectrum.py he-tiny=/tmp/demo_he/features.zarr tiny=/tmp/quality/demo_tiny/features.zarr \\
        --plot docs/img/pca_spectrum.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LEVELS = (0.90, 0.95, 0.99)
AT_K = (4, 8, 16, 32)


def spectra(store: str) -> dict[tuple[int, str], np.ndarray]:
    """(timestep, block) -> the share of variance of each component, largest first (sums to 1)."""
    from pathsegdiff.store import open_store
    from pathsegdiff.store.commands.compact import fit_store_bases
    from pathsegdiff.store.encodings.preset import Calibration

    fs = open_store(store)
    widest = max(b.channels for b in fs.schema.features.blocks)
    bases = fit_store_bases(fs, widest, Calibration())  # k is clipped to each block's channels
    return {(int(t), str(b)): np.asarray(basis.explained, dtype=np.float64) for (t, b), basis in bases.items()}


def k_for(explained: np.ndarray, level: float) -> int:
    """The smallest K whose first K components keep at least ``level`` of the variance."""
    return int(np.searchsorted(np.cumsum(explained), level - 1e-12) + 1)


def table(all_spectra: dict[str, dict[tuple[int, str], np.ndarray]]) -> str:
    head = (["model", "block", "t", "channels"] + [f"K for {round(p * 100)} %" for p in LEVELS]
            + [f"kept at K={k}" for k in AT_K])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, spec in all_spectra.items():
        for (t, b), e in sorted(spec.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            cum = np.cumsum(e)
            kept = [f"{cum[min(k, len(e)) - 1] * 100:.1f} %" if k < len(e) else "-" for k in AT_K]
            lines.append("| " + " | ".join([name, b, str(t), str(len(e))] + [str(k_for(e, p)) for p in LEVELS]
                                           + kept) + " |")
    return "\n".join(lines)


def plot(all_spectra: dict[str, dict[tuple[int, str], np.ndarray]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = sorted({b for spec in all_spectra.values() for _, b in spec})
    fig, axes = plt.subplots(1, len(blocks), figsize=(5.2 * len(blocks), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, block in zip(axes[0], blocks):
        for i, (name, spec) in enumerate(all_spectra.items()):
            for j, ((t, b), e) in enumerate(sorted((k, v) for k, v in spec.items() if k[1] == block)):
                k = np.arange(1, len(e) + 1)
                ax.plot(k, np.cumsum(e) * 100, color=colours[i % len(colours)], ls=("-", "--", ":")[j % 3],
                        marker=".", ms=3, label=f"{name}, t = {t}")
        for level in LEVELS:
            ax.axhline(level * 100, color="0.75", lw=0.8, zorder=0)
            ax.text(1.02, level * 100, f"{round(level * 100)} %", va="center", fontsize=7, color="0.4",
                    transform=ax.get_yaxis_transform())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (principal components kept)")
        ax.set_ylabel("cumulative explained variance (%)")
        ax.set_title(f"block {block}")
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("PCA spectrum of the demo stores' features (store compact's calibration sample)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+", help="NAME=STORE")
    p.add_argument("--plot", help="write the figure here (PNG)")
    a = p.parse_args()
    all_spectra = {name: spectra(path) for name, path in (s.split("=", 1) for s in a.stores)}
    print(table(all_spectra))
    if a.plot:
        plot(all_spectra, Path(a.plot))


if __name__ == "__main__":
    main()
