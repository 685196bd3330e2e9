"""Figures for a run: learning curves, normalised confusion matrix, prediction overlays.

Uses matplotlib with the Agg backend (no display needed); imported only when
a report is written, so training does not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _palette(n: int) -> np.ndarray:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return (np.array([cmap(i % cmap.N)[:3] for i in range(n)]) * 255).astype(np.uint8)


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(normalised: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Rows are true classes, normalised to sum to 1."""
    plt = _pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1 + 0.6 * n))
    im = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center",
                    color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _blend(rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray, ignore: int) -> np.ndarray:
    img = rgb.transpose(1, 2, 0).astype(float)
    labelled = mask != ignore
    colour = colours[np.where(labelled, mask, 0)].astype(float)
    img[labelled] = 0.55 * img[labelled] + 0.45 * colour[labelled]
    return img.astype(np.uint8)


def overlays(samples: list[dict[str, Any]], class_names: Sequence[str], ignore: int, path: Path) -> None:
    """One row per tile: the stored RGB, the label over it, the prediction over it."""
    plt = _pyplot()
    colours = _palette(len(class_names))
    fig, axes = plt.subplots(len(samples), 3, figsize=(7.5, 2.5 * len(samples)), squeeze=False)
    for row, s in zip(axes, samples):
        row[0].imshow(s["rgb"].transpose(1, 2, 0))
        row[1].imshow(_blend(s["rgb"], s["labels"], colours, ignore))
        row[2].imshow(_blend(s["rgb"], s["predicted"], colours, ignore))
        row[0].set_ylabel(s["tile_id"], fontsize=8)
        for ax, title in zip(row, ("RGB", "label", "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i] / 255) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
