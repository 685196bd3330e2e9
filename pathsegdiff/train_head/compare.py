"""``pathsegdiff compare RUN_A RUN_B``: metric deltas between two runs, with their seed-to-seed spread.

The question it answers: does B (say a head trained on a compact store) score
differently from A (the same head on the float16 store), by more than
training the same head again with another seed would?  Each run's
``results.json`` holds the mean over its seeds, their sample standard
deviation and each seed's numbers (``report.py``).  For every metric the
comparison gives B - A in points (hundredths), the spread (the larger of the
two runs' seed-to-seed standard deviations) and, when both runs trained the
same seeds, the standard deviation of the per-seed differences.  A delta is
*within* when it is no larger than the tolerance (0.5 points by default) or
the spread, whichever is larger.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathsegdiff.errors import InputError
from pathsegdiff.train_head.report import SCALARS

POINTS = 100.0  # metrics are fractions; deltas are reported in points (hundredths)
DEFAULT_TOLERANCE = 0.5  # points
# What must match for the delta to measure the features alone (a warning names any that differ).
SAME_SETUP = ("head", "blocks", "timesteps", "split", "n_tiles", "label_fraction", "n_train_tiles", "seeds")


@dataclass(frozen=True)
class MetricDelta:
    """One metric in both runs, in points: means, seed-to-seed standard deviations, B - A."""

    metric: str
    a: float | None
    a_std: float | None
    b: float | None
    b_std: float | None
    delta: float | None
    paired_std: float | None  # std of the per-seed differences, when both runs trained the same seeds
    tolerance: float = DEFAULT_TOLERANCE  # points

    @property
    def spread(self) -> float | None:
        """The larger seed-to-seed standard deviation of the two runs (None with one run each)."""
        stds = [s for s in (self.a_std, self.b_std) if s is not None]
        return max(stds) if stds else None

    def within(self) -> bool | None:
        """|B - A| <= max(tolerance, spread); None when a run lacks the metric."""
        if self.delta is None:
            return None
        return abs(self.delta) <= max(self.tolerance, self.spread or 0.0)


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    deltas: tuple[MetricDelta, ...]
    setup: dict[str, Any]  # what both runs share (head, split, seeds ...)
    warnings: tuple[str, ...]
    tolerance: float = DEFAULT_TOLERANCE  # points

    def delta(self, metric: str) -> MetricDelta:
        for d in self.deltas:
            if d.metric == metric:
                return d
        raise KeyError(metric)

    def to_dict(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "tolerance_points": self.tolerance, "setup": self.setup,
                "warnings": list(self.warnings),
                "deltas": [{**asdict(d), "spread": d.spread, "within": d.within()} for d in self.deltas]}


def load_results(run: str | Path) -> dict[str, Any]:
    """``results.json`` of a run directory (train or evaluate), or that file itself."""
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"{run}: no results.json; pass a run directory written by 'pathsegdiff train' or "
                         "'pathsegdiff evaluate'")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(results, dict) or "miou" not in results:
        raise InputError(f"{path}: holds no metrics (no 'miou'); is it a pathsegdiff results.json?")
    return results


def compare_runs(run_a: str | Path, run_b: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Compare B against A: scalar metrics, per-class IoU and (GlaS) object metrics."""
    a, b = load_results(run_a), load_results(run_b)
    classes_a, classes_b = _class_names(a), _class_names(b)
    if classes_a != classes_b:
        raise InputError(f"the runs score different classes ({classes_a} and {classes_b}): nothing to compare")
    deltas = [_delta(k, _scalar(a, k), _scalar(b, k), tolerance) for k in SCALARS]
    deltas += [_delta(f"iou {c}", _per_class(a, c), _per_class(b, c), tolerance) for c in classes_a]
    if a.get("objects") and b.get("objects"):
        deltas += [_delta(k, _objects(a, k), _objects(b, k), tolerance) for k in ("object_f1", "object_dice")]
    warnings = tuple(f"{k} differs: A {a.get(k)!r}, B {b.get(k)!r}" for k in SAME_SETUP if a.get(k) != b.get(k))
    if len(_runs(a)) < 2 or len(_runs(b)) < 2:
        warnings += ("a run has a single seed, so there is no seed-to-seed spread to judge the delta by; "
                     "train both with --runs 3 or more",)
    setup = {k: a.get(k) for k in SAME_SETUP if a.get(k) == b.get(k)}
    return Comparison(str(run_a), str(run_b), tuple(deltas), setup, warnings, tolerance)


# Each getter returns (mean, std, {seed: value}) of one metric in one results.json.
Values = tuple[float | None, float | None, dict[int, float]]


def _class_names(r: dict[str, Any]) -> list[str]:
    return list(r.get("class_names") or r.get("per_class") or [])


def _runs(r: dict[str, Any]) -> list[dict[str, Any]]:
    return r.get("per_run") or []


def _scalar(r: dict[str, Any], key: str) -> Values:
    v = r.get(key)
    v = v.get("mean") if isinstance(v, dict) else v  # an older layout kept {"mean": ...}
    per_seed = {run["seed"]: run.get(key) for run in _runs(r) if "seed" in run}
    return v, (r.get("std") or {}).get(key), per_seed


def _per_class(r: dict[str, Any], name: str) -> Values:
    c = (r.get("per_class") or {}).get(name) or {}
    per_seed = {run["seed"]: ((run.get("per_class") or {}).get(name) or {}).get("iou")
                for run in _runs(r) if "seed" in run}
    return c.get("iou"), c.get("iou_std"), per_seed


def _objects(r: dict[str, Any], key: str) -> Values:
    per_seed = {run["seed"]: (run.get("objects") or {}).get(key) for run in _runs(r) if "seed" in run}
    return r["objects"].get(key), ((r.get("std") or {}).get("objects") or {}).get(key), per_seed


def _points(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x * POINTS


def _delta(metric: str, a: Values, b: Values, tolerance: float) -> MetricDelta:
    (ma, sa, seeds_a), (mb, sb, seeds_b) = a, b
    ma, sa, mb, sb = map(_points, (ma, sa, mb, sb))
    delta = mb - ma if ma is not None and mb is not None else None
    paired = None
    if seeds_a and set(seeds_a) == set(seeds_b) and len(seeds_a) > 1:
        diffs = [_points(seeds_b[s]) - _points(seeds_a[s]) for s in sorted(seeds_a)
                 if _points(seeds_a[s]) is not None and _points(seeds_b[s]) is not None]
        paired = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None
    return MetricDelta(metric, ma, sa, mb, sb, delta, paired, tolerance)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _verdict(d: MetricDelta) -> str:
    ok = d.within()
    if ok is None:
        return "n/a"
    if not ok:
        return "differs"
    return "within spread" if abs(d.delta) > d.tolerance else f"within {d.tolerance:g} pt"


def format_comparison(c: Comparison, metrics: Sequence[str] | None = None) -> str:
    """A readable table: each metric in A and B (mean ± seed std, points), B - A, the spread, a verdict."""
    setup = c.setup
    lines = [f"A: {c.run_a}", f"B: {c.run_b}"]
    if setup:
        lines.append("same " + ", ".join(f"{k} {v}" for k, v in setup.items()))
    lines += [f"warning: {w}" for w in c.warnings]
    lines += ["", "| metric (points) | A | B | B - A | seed spread | verdict |", "|---|---|---|---|---|---|"]
    for d in c.deltas:
        if metrics and d.metric not in metrics:
            continue
        delta = "n/a" if d.delta is None else f"{d.delta:+.2f}" + (
            f" ± {d.paired_std:.2f}" if d.paired_std is not None else "")
        spread = "n/a" if d.spread is None else f"{d.spread:.2f}"
        lines.append(f"| {d.metric} | {_pm(d.a, d.a_std)} | {_pm(d.b, d.b_std)} | {delta} | {spread} "
                     f"| {_verdict(d)} |")
    lines += ["", f"B - A ± the std of the per-seed differences (when both ran the same seeds); within: "
              f"|B - A| <= max({c.tolerance:g} points, the larger seed-to-seed std)."]
    return "\n".join(lines)
