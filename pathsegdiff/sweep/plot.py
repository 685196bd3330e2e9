"""The sweep's plot: mIoU (mean ± sd over runs) of every cell, one panel per head.

Within a panel each block set / timestep set is a group on the x axis and
each label fraction a marker with its error bar, side by side in the group,
so both questions the sweep asks read off one figure: which features (across
groups) and how many labels (within a group).  A cell whose sd is undefined
(one run) has no bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def sweep_plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Write ``path``: rows as :func:`table.cell_row` gives them, in the sweep's cell order."""
    plt = _pyplot()
    heads = _unique(r["head"] for r in rows)
    groups = _unique((r["blocks"], r["timesteps"]) for r in rows)
    fractions = _unique(r["label_fraction"] for r in rows)
    one_timestep_set = len({t for _, t in groups}) == 1
    names = [b if one_timestep_set else f"{b}\nt {t}" for b, t in groups]
    width = max(4.0, 0.55 * len(groups) * max(2, len(fractions)) + 1.5)
    fig, axes = plt.subplots(1, len(heads), figsize=(width * len(heads), 4.2), sharey=True, squeeze=False)
    colours = plt.get_cmap("viridis")([0.15 + 0.7 * i / max(1, len(fractions) - 1) for i in range(len(fractions))])
    step = 0.7 / len(fractions)
    for ax, head in zip(axes[0], heads):
        for i, frac in enumerate(fractions):
            xs, ys, errs = [], [], []
            for g, group in enumerate(groups):
                row = next((r for r in rows if r["head"] == head and (r["blocks"], r["timesteps"]) == group
                            and r["label_fraction"] == frac), None)
                if row is None or row["miou"] is None:
                    continue
                xs.append(g - 0.35 + step * (i + 0.5))
                ys.append(row["miou"])
                errs.append(row["miou_sd"] or 0.0)
            ax.errorbar(xs, ys, yerr=errs, fmt="o", color=colours[i], capsize=4, markersize=6,
                        label=f"{frac} labels")
        ax.set_xticks(range(len(groups)), names)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(f"{head} head")
        ax.set_xlabel(f"blocks (timesteps {groups[0][1]})" if one_timestep_set else "blocks, timesteps")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mIoU (mean ± sd over runs)")
    axes[0][-1].legend(fontsize="small", loc="best")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
