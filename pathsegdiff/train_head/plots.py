"""Figures for a run: learning curves, normalised confusion matrix, prediction overlays.

Uses matplotlib with the Agg backend (no display needed); imported only when
a report is written, so training does not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.colours import class_colours, paint

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def learning_curves(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Train loss and validation mIoU per epoch, one line per run."""
    plt = _pyplot()
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        ax_loss.plot(epochs, [h["train_loss"] for h in hist], label=label)
        ax_miou.plot(epochs, [h["val_miou"] for h in hist], label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_miou.set(xlabel="epoch", ylabel="val mIoU", title="validation mIoU", ylim=(0, 1))
    if len(histories) > 1:
        ax_miou.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def confusion_matrix(normalised: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Rows are true classes, normalised to sum to 1.

    The figure grows with the number of classes and the length of their names
    (a cell is about 0.6 inch), so names and values stay legible.
    """
    plt = _pyplot()
    n = len(class_names)
    names = max(len(c) for c in class_names) * 0.075  # inches a rotated 9 pt name needs
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * n + names + 2.4), max(4.2, 0.6 * n + 0.75 * names + 1.6)),
                           layout="constrained")
    im = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(n), class_names, fontsize=9)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title("Confusion matrix (each row sums to 1)", fontsize=11)
    size = 9 if n <= 8 else 7 if n <= 14 else 5
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=size,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class's pixels")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _blend(rgb: np.ndarray, mask: np.ndarray, ignore: int) -> np.ndarray:
    return paint(rgb.transpose(1, 2, 0), np.asarray(mask), ignore)


def overlays(samples: list[dict[str, Any]], class_names: Sequence[str], ignore: int, path: Path) -> None:
    """One row per tile: the stored RGB, the label over it, the prediction over it."""
    plt = _pyplot()
    colours = class_colours(len(class_names))
    fig, axes = plt.subplots(len(samples), 3, figsize=(7.5, 2.5 * len(samples)), squeeze=False)
    for row, s in zip(axes, samples):
        row[0].imshow(s["rgb"].transpose(1, 2, 0))
        row[1].imshow(_blend(s["rgb"], s["labels"], ignore))
        row[2].imshow(_blend(s["rgb"], s["predicted"], ignore))
        row[0].set_ylabel(s["tile_id"], fontsize=8)
        for ax, title in zip(row, ("RGB", "label", "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i] / 255) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
