"""Run directories holding a ``results.json`` as ``train`` writes it, for the ``compare`` tests."""

from __future__ import annotations

import json

from pathsegdiff.train_head.report import aggregate_runs

CLASSES = ("background", "hematoxylin-dense", "eosin-dense")


def per_run(seed: int, miou: float) -> dict:
    iou = [miou - 0.05, miou, miou + 0.05]
    return {"seed": seed, "run_dir": f"runs/seed_{seed}", "best_epoch": 3, "val_miou": miou, "miou": miou,
            "mdice": miou + 0.1, "pixel_accuracy": miou + 0.2, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "per_class": {c: {"iou": v, "dice": v + 0.1, "pixels": 10} for c, v in zip(CLASSES, iou)}}


def write_run(path, mious, seeds=None, **extra):
    """A run directory holding a results.json as ``train`` writes it (aggregate of per-seed numbers)."""
    seeds = seeds or list(range(len(mious)))
    runs = [per_run(s, m) for s, m in zip(seeds, mious)]
    results = {"split": "test", "n_tiles": 20, "head": "fcn", "blocks": ["up1"], "timesteps": [50],
               "class_names": list(CLASSES), "label_fraction": 1.0, "n_train_tiles": 60, "runs": len(runs),
               "seeds": seeds, **aggregate_runs(runs, CLASSES), "per_run": runs, **extra}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    return path
