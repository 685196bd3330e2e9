"""What a run leaves behind: ``results.json``, ``summary.md`` and ``plots/``.

``results.json`` is plain JSON (undefined values such as the IoU of a class
that never occurs are ``null``).  With several runs, the scalar metrics and
per-class IoU/Dice are the mean over runs, ``std`` holds their sample
standard deviations, and ``per_run`` keeps each run's own numbers.
``per_slide`` and ``per_patient`` (the best run's) score each slide and each
patient on its own pixels and give the spread across them (mean, sample
std, min, max).  ``stores`` lists the stores evaluated; a report written
before several stores names one ``store``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.train_head.metrics import ConfusionMatrix
from pathsegdiff.train_head.progress import bar

SCALARS = ("pixel_accuracy", "miou", "mdice")
MAX_ROWS = 30  # slides or patients listed one per line in summary.md (the worst first)


def clean_json(obj: Any) -> Any:
    """NaN and infinities become null; numpy scalars and arrays become Python values."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def aggregate_runs(per_run: list[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Mean and std over runs of the scalar metrics and per-class IoU/Dice; confusion summed."""
    out: dict[str, Any] = {"std": {}}
    for key in SCALARS:
        out[key], out["std"][key] = _mean_std([r[key] for r in per_run])
    if all("boundary_f1" in r for r in per_run):  # boundary.py; runs evaluated before it have none
        out["boundary_f1"], out["std"]["boundary_f1"] = _mean_std([r["boundary_f1"] for r in per_run])
        out["boundary_tolerance_px"] = per_run[0].get("boundary_tolerance_px")
    out["per_class"] = {}
    for name in class_names:
        entry = {}
        for m in ("iou", "dice"):
            entry[m], entry[f"{m}_std"] = _mean_std([r["per_class"][name][m] for r in per_run])
        entry["pixels"] = per_run[0]["per_class"][name]["pixels"]
        out["per_class"][name] = entry
    out["confusion_matrix"] = np.sum([r["confusion_matrix"] for r in per_run], axis=0).tolist()
    if all("objects" in r for r in per_run):
        keys = ("object_f1", "object_dice", "object_hausdorff")
        out["objects"] = {k: _mean_std([r["objects"][k] for r in per_run])[0] for k in keys}
        out["std"]["objects"] = {k: _mean_std([r["objects"][k] for r in per_run])[1] for k in keys}
    return out


def _fmt(x: Any, std: Any = None) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4f}" + (f" ± {std:.4f}" if isinstance(std, float) else "")
    return str(x)


FIGURES = {  # file under plots/ -> (title, what it shows)
    "learning_curves.png": ("Learning curves", "training loss and validation mIoU per epoch"),
    "confusion_matrix.png": ("Confusion matrix", "each row is a true class, split by the predicted class"),
    "overlays.png": ("Example tiles", "RGB, label and prediction in the class colours (ignored pixels unpainted)"),
}


def summary_markdown(results: dict[str, Any]) -> str:
    """A readable page: what was evaluated, metrics overall and per class, per slide and patient, objects, runs,
    figures."""
    std = results.get("std", {})
    stores = results.get("stores") or [results.get("store", "store")]
    lines = [
        f"# {results.get('head', 'head')} head on {' + '.join(map(str, stores))} ({results.get('split')} split)",
        "",
        f"- store identity: `{results.get('store_identity')}`; blocks {results.get('blocks')}, "
        f"timesteps {results.get('timesteps')}",
        f"- tiles evaluated: {results.get('n_tiles')}; runs: {results.get('runs', 1)}",
    ]
    if "n_train_tiles" in results:
        lines.append(f"- train tiles: {results['n_train_tiles']} (label fraction {results.get('label_fraction')}); "
                     f"validation: {_validation(results)}")
    if results.get("n_synthetic_tiles") or results.get("synthetic", "include") != "include":
        lines.append(f"- synthetic tiles trained on: {results.get('n_synthetic_train_tiles', 0)} of the "
                     f"{results['n_train_tiles']} train tiles (`--synthetic {results.get('synthetic')}`; the stores "
                     f"hold {results.get('n_synthetic_tiles', 0)}, never used for validation or test)")
    tiles = results.get("store_tiles")
    if tiles and tiles.get("written") != tiles.get("total"):
        lines.append(f"- **store partly written: {tiles['written']} of {tiles['total']} tiles** (the extraction was "
                     "still running or interrupted; this run used the written ones)")
    lines += _labels(results)
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(results.get(k), std.get(k))} |" for k in SCALARS]
    if "boundary_f1" in results:
        lines.append(f"| boundary F1 (within {results.get('boundary_tolerance_px', 2):g} px) "
                     f"| {_fmt(results['boundary_f1'], std.get('boundary_f1'))} |")
    lines += ["", "| class | IoU | Dice | pixels |", "|---|---|---|---|"]
    for name, c in results.get("per_class", {}).items():
        lines.append(f"| {name} | {_fmt(c['iou'], c.get('iou_std'))} | {_fmt(c['dice'], c.get('dice_std'))} "
                     f"| {c['pixels']} |")
    lines += _per_group(results.get("per_slide") or {}, "slides", "slide")
    lines += _per_group(results.get("per_patient") or {}, "patients", "patient")
    if results.get("objects"):
        o, os_ = results["objects"], std.get("objects", {})
        lines += ["", "| object metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(o.get(k), os_.get(k))} |" for k in ("object_f1", "object_dice", "object_hausdorff")]
    if len(results.get("per_run", [])) > 1:
        lines += ["", "## Runs", "", "| seed | best epoch | val mIoU | mIoU | mDice | pixel acc. |",
                  "|---|---|---|---|---|---|"]
        for r in results["per_run"]:
            lines.append(f"| {r['seed']} | {r['best_epoch']} | {_fmt(r['val_miou'])} | {_fmt(r['miou'])} "
                         f"| {_fmt(r['mdice'])} | {_fmt(r['pixel_accuracy'])} |")
    if results.get("plots"):
        lines += ["", "## Figures"]
        for path in results["plots"]:  # relative to this file
            title, what = FIGURES.get(Path(path).name, (Path(path).stem.replace("_", " "), ""))
            lines += ["", f"**{title}**: {what} ([{path}]({path}))", "", f"![{title}]({path})"]
    return "\n".join(lines) + "\n"


def _validation(results: dict[str, Any]) -> str:
    """Where the validation tiles (early stopping, best epoch) came from, in words."""
    n, source = results.get("n_val_tiles"), results.get("val_source")
    if source == "store":
        several = len(results.get("stores") or []) > 1
        marks, table = ("the stores mark", "their tile tables'") if several else ("the store marks", "its tile table's")
        return (f"the {n} tiles {marks} `val` ({table} `split` column, set at extraction), "
                "used to stop early and pick the best epoch")
    return f"{n} tiles {source}, used to stop early and pick the best epoch"


def _labels(results: dict[str, Any]) -> list[str]:
    if results.get("pseudo_labels"):
        return [("- labels: **stain-derived pseudo-labels**, computed from the pixels by a rule (the store's "
                 f"provenance: `{results.get('label_source')}`), not annotated by a pathologist: the metrics "
                 "measure agreement with that rule, not with histology")]
    if results.get("label_source"):
        return [f"- labels: {results['label_source']}"]
    return []


def _per_group(summary: dict[str, Any], key: str, one: str) -> list[str]:
    """The "## Per slide" or "## Per patient" section: the spread across groups, then each group's line."""
    groups = summary.get(key) or {}
    if len(groups) == 1:
        return ["", (f"All evaluated tiles come from one {one} ({next(iter(groups))}): there is no spread across "
                     f"{key} to report.")]
    if len(groups) < 2 or not summary.get("spread"):
        return []
    how = " (all of its slides' pixels together)" if key == "patients" else ""
    lines = ["", f"## Per {one}", "",
             f"Each of the {len(groups)} {key} scored on its own pixels{how}, then summarised across {key}:", "",
             f"| metric | mean | std | min | max | {key} |", "|---|---|---|---|---|---|"]
    for k, s in summary["spread"].items():
        lines.append(f"| {k} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['min'])} | {_fmt(s['max'])} "
                     f"| {s['n']} |")
    extra = key == "patients"
    worst = sorted(groups.items(), key=lambda kv: (kv[1]["miou"] is None, kv[1]["miou"] or 0.0))[:MAX_ROWS]
    shown = f"the {MAX_ROWS} of lowest mIoU first; results.json has all" if len(groups) > MAX_ROWS else "lowest first"
    lines += ["", f"Each {one}, by mIoU ({shown}):", "",
              f"| {one} | mIoU | mDice | pixel acc. | pixels |" + (" slides |" if extra else ""),
              "|---|---|---|---|---|" + ("---|" if extra else "")]
    for name, g in worst:
        lines.append(f"| {name} | {_fmt(g['miou'])} | {_fmt(g['mdice'])} | {_fmt(g['pixel_accuracy'])} "
                     f"| {g['n_pixels']} |" + (f" {', '.join(g.get('slides', []))} |" if extra else ""))
    return lines


def write_report(
    out: Path,
    results: dict[str, Any],
    confusion: ConfusionMatrix | None,
    samples: list[dict[str, Any]],
    histories: dict[str, list[dict[str, float]]] | None,
    class_names: Sequence[str],
    ignore_index: int,
    plots: bool = True,
    progress: bool = False,
) -> None:
    """Write results.json, summary.md and (when asked) the figures under plots/."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if plots:
        from pathsegdiff.train_head import plots as P

        if histories:
            figures.append(("learning_curves.png", lambda path: P.learning_curves(histories, path)))
        if confusion is not None:
            figures.append(("confusion_matrix.png",
                            lambda path: P.confusion_matrix(confusion.normalised(), class_names, path)))
        if samples:
            figures.append(("overlays.png", lambda path: P.overlays(samples, class_names, ignore_index, path)))
        (out / "plots").mkdir(exist_ok=True)
        results = {**results, "plots": [f"plots/{name}" for name, _ in figures]}
    with bar(len(figures) + 1, "report", progress, unit="file") as steps:
        for name, draw in figures:
            steps.set_description(f"report: plots/{name}")
            draw(out / "plots" / name)
            steps.update(1)
        steps.set_description("report: results.json, summary.md")
        (out / "results.json").write_text(json.dumps(clean_json(results), indent=1))
        (out / "summary.md").write_text(summary_markdown(clean_json(results)))
        steps.update(1)
