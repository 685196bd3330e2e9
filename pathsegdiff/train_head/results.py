"""What ``train`` and ``evaluate`` return: results.json's content, where it was written, and one line.

A result is the dict written to ``results.json`` (so ``r["miou"]`` reads as
before) with the directory it went to (``r.where``) and :meth:`line`, the line
the command line prints, as extraction's ``ExtractSummary.line()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fmt_metric(r: dict[str, Any], key: str) -> str:
    """``0.8123`` or ``0.8123 ± 0.0101`` (the std over runs), ``n/a`` when undefined."""
    v, s = r.get(key), (r.get("std") or {}).get(key)
    return "n/a" if v is None else f"{v:.4f}" + (f" ± {s:.4f}" if s is not None else "")


def metrics_text(r: dict[str, Any]) -> str:
    text = (f"mIoU {fmt_metric(r, 'miou')}, mDice {fmt_metric(r, 'mdice')}, "
            f"pixel accuracy {fmt_metric(r, 'pixel_accuracy')}")
    if "boundary_f1" in r:
        text += f", boundary F1 ({r.get('boundary_tolerance_px', 2):g} px) {fmt_metric(r, 'boundary_f1')}"
    return text


class RunResult(dict):
    """results.json's content, plus where it was written."""

    def __init__(self, results: dict[str, Any], where: str | Path):
        super().__init__(results)
        self.where = Path(where)

    def line(self) -> str:
        return (f"{self.where}: {self['head']} head, {self['split']} split ({self['n_tiles']} tiles): "
                f"{metrics_text(self)}")


class TrainResult(RunResult):
    """What ``train`` wrote to RUN/results.json; ``where`` is the run directory."""

    def line(self) -> str:
        tiles = self.get("store_tiles") or {}
        partial = (f" (store partly written: {tiles['written']} of {tiles['total']} tiles)"
                   if tiles and tiles.get("written") != tiles.get("total") else "")
        return super().line() + partial + self.synthetic_text()

    def synthetic_text(self) -> str:
        """``; trained on 30 tiles, 6 of them synthetic (--synthetic include)`` when the stores hold synthetic tiles
        or the run left them out; else empty."""
        choice = self.get("synthetic", "include")
        if not self.get("n_synthetic_tiles") and choice == "include":
            return ""
        return (f"; trained on {self.get('n_train_tiles')} tiles, {self.get('n_synthetic_train_tiles', 0)} of them "
                f"synthetic (--synthetic {choice})")


class EvaluateResult(RunResult):
    """What ``evaluate`` wrote to its report's results.json; ``where`` is the report directory."""
