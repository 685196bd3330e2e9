"""``pathsegdiff train``: select tiles and features, fit N seeds, evaluate, report.

One store or several: several are read as one (``store_set.StoreSet``: the
same features and classes, tiles numbered across them, splits over their
joint tile table), and one store is the one-store case of the same path.

Layout of a run directory::

    RUN/run.json                 config, stores and their identity, which run is best
    RUN/results.json, summary.md evaluation on the test split (val when the stores have no test split)
    RUN/plots/                   learning curves, confusion matrix, overlays
    RUN/runs/seed_<s>/           head.safetensors, head.json, history.json of each seed

With ``config.coefficients`` the heads train on a PCA store's coefficients and are saved composed onto its
features (``coefficients.py``); run.json and head.json record the encoding and basis_sha256.

A plug-in head (``config.head`` a class path) is imported and hashed once; run.json and every head.json
record its class path, keyword arguments and the SHA-256 of its file (``heads/plugins.py``), and one dry
forward on a batch refuses a head that breaks the protocol before anything is written.  run.json also
records the class weights the loss used (``class_weights_used``: ``auto`` resolved to numbers) and whether the
stores' synthetic tiles were trained on (the config's ``synthetic``: include, exclude or only; results.json and summary.md
count them).

A RUN directory that holds a different run (another config or store) is
refused unless ``overwrite`` (another config, store identity or list of
stores); a directory that holds anything else is never
touched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import torch

from pathsegdiff.errors import ConfigError, InputError, StoreExistsError
from pathsegdiff.output_dir import require_room, written_or_removed
from pathsegdiff.train_head.checkpoint import RUN_META, HeadMeta
from pathsegdiff.train_head.coefficients import store_bases
from pathsegdiff.train_head.data import TileDataset
from pathsegdiff.train_head.evaluate import evaluate_head, label_origin, require_rgb
from pathsegdiff.train_head.fit import TrainConfig, dry_run, fit_one, resolve_class_weights, resolve_device
from pathsegdiff.train_head.heads import HeadConfig, HeadSpec, build_head, head_class
from pathsegdiff.train_head.metrics import ConfusionMatrix
from pathsegdiff.train_head.report import aggregate_runs, clean_json, write_report
from pathsegdiff.train_head.results import TrainResult
from pathsegdiff.train_head.splits import read_splits, require_labels, resolve_selection, train_tiles
from pathsegdiff.train_head.store_set import open_stores
from pathsegdiff.train_head.store_state import require_labelled_pixels, store_state


# What train (and evaluate's default report folder) write at the top of a run directory.
RUN_ENTRIES = frozenset({RUN_META, RUN_META + ".tmp", "runs", "results.json", "summary.md", "plots", "eval"})


def prepare_run_dir(run_dir: Path, config: TrainConfig, store_identity: str, overwrite: bool,
                    stores: Sequence[str] | None = None) -> None:
    """Empty ``run_dir`` for this run, refusing to replace another run without ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreExistsError(f"{run_dir}: exists and is a file, not a run directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        meta_path = run_dir / RUN_META
        if not meta_path.is_file():
            raise StoreExistsError(f"{run_dir}: exists and does not hold a pathsegdiff run; choose another directory")
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = {}
        same = _recorded_config(old) == clean_json(config.to_dict()) and old.get("store_identity") == store_identity
        if stores is not None:  # a run of the same features over other stores is another run
            same = same and (old.get("stores") or [old.get("store")]) == list(stores)
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES)
        if foreign:  # a run directory a user put other files into is never deleted
            raise StoreExistsError(f"{run_dir}: holds files that 'train' did not write ({', '.join(foreign[:3])}); "
                                   "choose another directory (--overwrite only replaces a run)")
        if not (same or overwrite):
            raise StoreExistsError(f"{run_dir}: holds a different run; pass --overwrite to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _recorded_config(run_meta: dict[str, Any]) -> dict[str, Any] | None:
    """A run.json's config as TrainConfig.to_dict() gives it now: options added since read as their defaults,
    renamed ones by their new names; None when it no longer parses."""
    try:
        return clean_json(TrainConfig.from_dict(run_meta.get("config") or {}).to_dict())
    except (ConfigError, TypeError):
        return None


def _weights_json(weights: list[np.ndarray | None]) -> list | None:
    """The class weights the loss used: one list, or one per run when each run drew its own labels."""
    as_lists = [None if w is None else w.tolist() for w in weights]
    return as_lists[0] if len(as_lists) == 1 else as_lists


def _write_run_meta(run_dir: Path, **fields: Any) -> None:
    tmp = run_dir / (RUN_META + ".tmp")
    tmp.write_text(json.dumps(clean_json(fields), indent=1))
    os.replace(tmp, run_dir / RUN_META)


def train(
    stores: str | Sequence[str],
    run_dir: str | os.PathLike,
    config: TrainConfig,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    echo: Callable[[str], None] = lambda line: None,
) -> TrainResult:
    """Train ``config.runs`` heads on one store or several and write the run directory; returns results.json's
    content (with ``.line()``).  ``config.synthetic``: ``include``, ``exclude`` or ``only`` the stores'
    synthetic tiles in training (``splits.train_tiles``); they are never validation or test tiles."""
    synthetic = config.synthetic
    run_dir = Path(run_dir)
    store = open_stores(stores)  # refuses stores of other features or classes before anything is written
    wheres = list(store.wheres)
    for s in store.stores:
        require_labels(s)
    blocks, timesteps = resolve_selection(store, config.blocks, config.timesteps)
    resolve_device(config.device)
    # refused before anything is written: not a PCA store, or a head that cannot take coefficients
    coefficients = store_bases(wheres, config.head)[1] if config.coefficients else None
    splits = read_splits(store, config.data_seed, config.val_fraction)
    # per-run label draws (the label-efficient protocol): run r trains on the subset of data_seed + r
    draws = config.runs if config.label_draws == "per-run" else 1
    subsets = [train_tiles(splits, config.label_fraction, config.data_seed + d, synthetic) for d in range(draws)]
    subset = subsets[0]
    n_synthetic = int(np.isin(subset, splits.synthetic).sum())
    if len(splits.synthetic) or synthetic != "include":
        echo(f"training on {len(subset)} tiles, {n_synthetic} of them synthetic (--synthetic {synthetic}; the stores "
             f"hold {len(splits.synthetic)} written synthetic tiles, never used for validation or test)")
    if not len(splits.val):
        raise InputError(f"{store.location}: no validation tile: the stores have no val split and "
                         f"only {len(splits.train)} written train tile(s) to carve one from")
    tiles_written = store_state(store, splits, config.allow_partial, echo)
    eval_split = "test" if len(splits.test) else "val"
    eval_idx = splits.get(eval_split)
    sch = store.schema
    for s in subsets:
        require_labelled_pixels(wheres, s, len(sch.class_names), sch.ignore_index, store.location)
    cls, code = head_class(config.head)  # a plug-in is imported and hashed here, once
    spec = HeadSpec(blocks, timesteps, len(sch.class_names), sch.tile_size)
    head_config = HeadConfig.for_run(code.class_path if code else config.head, spec, config.head_options)
    meta_base = HeadMeta(head_config, tuple(sch.class_names), sch.ignore_index, store.identity,
                         dict(store.meta.get("identity_fields", {})), tuple(wheres), config.to_dict(),
                         coefficients=coefficients, code=code)
    require_rgb(cls, store)
    if code is not None:  # refused before anything is written: a plug-in that breaks the protocol
        dry_run(build_head(head_config, cls), TileDataset(wheres, subset[:2], [b.name for b in blocks], timesteps,
                                                          with_rgb=True), spec.n_classes, torch.device("cpu"))
    weights = [resolve_class_weights(config, wheres, s, spec.n_classes, sch.ignore_index) for s in subsets]
    n_params = sum(p.numel() for p in build_head(head_config, cls).parameters())
    # each run's weights (safetensors, float32) and its checkpoint, the plots and reports: refused now, not after
    require_room(run_dir, config.runs * 3 * 4 * n_params + 16 * 2**20, "the run")
    with written_or_removed(run_dir, "the run"):  # a disk filled meanwhile: one line, the run removed (its own)
        prepare_run_dir(run_dir, config, store.identity, overwrite, wheres)
        common = {"config": config.to_dict(), "stores": wheres, "store_identity": store.identity,
                  **({"coefficients": coefficients} if coefficients else {}),
                  **({"head_code": code.to_dict()} if code else {}),
                  "class_weights_used": _weights_json(weights)}
        _write_run_meta(run_dir, **common, status="running")

        per_run, histories, evaluations = [], {}, []
        for r in range(config.runs):
            seed = config.seed + r
            sub = f"runs/seed_{seed}"
            fit = fit_one(wheres, head_config, meta_base, subsets[r % draws], splits.val, config, seed, run_dir / sub,
                          progress, cls, weights[r % draws])
            (run_dir / sub / "history.json").write_text(json.dumps(clean_json(fit.history), indent=1))
            ev = evaluate_head(fit.head, fit.meta, wheres, eval_idx, config.device, config.batch_size,
                               config.loader_workers, keep_samples=4, progress=progress,
                               desc=f"seed {seed}: {eval_split} split",
                               echo=echo if r == 0 else (lambda line: None))  # why a PCA store decodes: said once
            evaluations.append(ev)
            histories[f"seed {seed}"] = fit.history
            per_run.append({"seed": seed, "run_dir": sub, "best_epoch": fit.meta.epoch, "val_miou": fit.meta.val_miou,
                            "epochs_run": len(fit.history), "label_draw_seed": config.data_seed + r % draws,
                            "n_train_tiles": int(len(subsets[r % draws])), **ev.metrics})
        best = int(np.argmax([r["val_miou"] if r["val_miou"] is not None else -1 for r in per_run]))
        results = {
            "split": eval_split, "n_tiles": int(len(eval_idx)), "stores": wheres, "store_identity": store.identity,
            "class_names": list(sch.class_names), "head": head_config.kind, "blocks": [b.name for b in blocks],
            "timesteps": list(timesteps), "label_fraction": config.label_fraction, "n_train_tiles": int(len(subset)),
            "synthetic": synthetic, "n_synthetic_train_tiles": n_synthetic,
            "n_synthetic_tiles": int(len(splits.synthetic)),
            "n_val_tiles": int(len(splits.val)), "val_source": splits.val_source, "runs": config.runs,
            "seeds": [r["seed"] for r in per_run], "best_run": per_run[best]["run_dir"],
            **aggregate_runs(per_run, sch.class_names),
            "per_slide": per_run[best]["per_slide"], "per_patient": per_run[best]["per_patient"], "per_run": per_run,
            **label_origin(store), "store_tiles": tiles_written,
        }
        total = ConfusionMatrix(len(sch.class_names), sch.ignore_index)
        for ev in evaluations:
            total.merge(ev.confusion)
        write_report(run_dir, results, confusion=total, samples=evaluations[best].samples, histories=histories,
                     class_names=sch.class_names, ignore_index=sch.ignore_index, plots=plots, progress=progress)
        _write_run_meta(run_dir, **common, status="done", best_run=results["best_run"])
    return TrainResult(json.loads((run_dir / "results.json").read_text()), run_dir)
