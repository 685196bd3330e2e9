"""The Python face of ``train_head`` for notebooks: stores as a torch Dataset, fit, evaluate, save a run.

::

    from pathsegdiff.train_head import api

    train = api.open_dataset("features.zarr", split="train", label_fraction=0.25)
    val = api.open_dataset("features.zarr", split="val")
    result = api.fit(train, val, api.TrainConfig(head="my_heads.py:MyHead", head_options={"width": 32}))
    print(api.evaluate(result, api.open_dataset("features.zarr", split="test")).line())
    api.save_run(result, "runs/my_head")      # pathsegdiff evaluate / predict --head read it

``api.train`` is the command line's ``train`` (N seeds, evaluation, report).
A head is a built-in name or a plug-in class in a .py file (``heads/protocol.py``
says what it receives and returns); a class defined in a notebook cell has no
file a run could be rebuilt from, so write it to one (``%%writefile``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.checkpoint import RUN_META, HeadMeta, load_head, save_head
from pathsegdiff.train_head.data import TileDataset
from pathsegdiff.train_head.evaluate import Evaluation, evaluate_head, evaluate_run, require_rgb
from pathsegdiff.train_head.fit import FitResult, TrainConfig, dry_run, fit_head, resolve_class_weights
from pathsegdiff.train_head.heads import HeadConfig, HeadInputs, HeadSpec, build_head, head_class
from pathsegdiff.train_head.report import clean_json
from pathsegdiff.train_head.run import prepare_run_dir, train
from pathsegdiff.train_head.splits import parse_label_fraction, read_splits, require_labels, train_tiles
from pathsegdiff.train_head.splits import resolve_selection
from pathsegdiff.train_head.store_set import open_stores

__all__ = ["Evaluation", "FitResult", "HeadInputs", "HeadSpec", "TileDataset", "TrainConfig", "evaluate",
           "evaluate_run", "fit", "load_head", "open_dataset", "save_run", "train"]


def open_dataset(
    stores: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "train",
    blocks: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    label_fraction: float | int | str = 1.0,
    patients: Sequence[str] | None = None,
    data_seed: int = 0,
    val_fraction: float = 0.2,
    synthetic: str = "include",
) -> TileDataset:
    """The written tiles of ``split`` of one store or several (read as one), as a torch ``Dataset``.

    Items are dicts: ``index`` (tile number across the stores), ``features``
    ``{t: {block: float16 tensor (C, h, w)}}``, ``labels`` (H, W) int64.  Splits
    are the command line's (``splits.py``: the stores' ``split`` column, a val
    split carved from train by ``data_seed`` when they have none);
    ``label_fraction`` keeps a seeded subset of the train tiles (a fraction,
    ``"10%"`` or a tile count); ``patients`` keeps only those patients' tiles.
    ``synthetic`` (the train split only): ``include`` the stores' synthetic tiles
    beside the real ones, ``exclude`` them, or ``only`` them; they are never in
    ``val`` or ``test`` (docs/synthetic.md).
    """
    wheres = [str(s) for s in ([stores] if isinstance(stores, (str, os.PathLike)) else stores)]
    store = open_stores(wheres)
    for s in store.stores:
        require_labels(s)
    chosen, steps = resolve_selection(store, tuple(blocks) if blocks else None, tuple(timesteps) if timesteps else None)
    splits = read_splits(store, data_seed, val_fraction)
    indices = splits.get(split)
    fraction = parse_label_fraction(label_fraction)
    if split == "train":
        indices = train_tiles(splits, fraction, data_seed, synthetic)
    elif fraction != 1.0:
        raise ConfigError(f"label_fraction subsets the train split, not {split}")
    if patients is not None:
        column = np.asarray(store.full_table()["patient"]).astype(str)
        indices = indices[np.isin(column[indices], [str(p) for p in patients])]
    if not len(indices):
        raise ConfigError(f"{store.location}: no written tile in the {split} split"
                          + (f" of patients {list(patients)}" if patients is not None else ""))
    return TileDataset(wheres, indices, [b.name for b in chosen], steps)


def fit(train: TileDataset, val: TileDataset, config: TrainConfig = TrainConfig(), seed: int | None = None,
        progress: bool = True) -> FitResult:
    """Train ``config.head`` on ``train`` with the command line's loop (one seed: ``seed``, else
    ``config.seed``), stopping early on ``val``; returns the best epoch's head, its meta and the history.

    ``config.augment``, the loss and class weights apply as in ``train``; the datasets' own augment is
    replaced by the config's.
    """
    if config.coefficients:
        raise ConfigError("fit trains on features; for --coefficients use api.train")
    if tuple(train.wheres) != tuple(val.wheres) or train.blocks != val.blocks or train.timesteps != val.timesteps:
        raise ConfigError("train and val must come from the same stores with the same blocks and timesteps")
    store = open_stores(train.wheres)
    sch = store.schema
    spec = train.spec
    cls, code = head_class(config.head)
    require_rgb(cls, store)
    head_config = HeadConfig.for_run(code.class_path if code else config.head, spec, config.head_options)
    meta = HeadMeta(head_config, tuple(sch.class_names), sch.ignore_index, store.identity,
                    dict(store.meta.get("identity_fields", {})), tuple(train.wheres), config.to_dict(), code=code)
    weights = resolve_class_weights(config, train.wheres, train.indices, spec.n_classes, sch.ignore_index)
    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    head = build_head(head_config, cls)
    if code is not None:
        dry_run(head, train.with_options(with_rgb=True), spec.n_classes, torch.device("cpu"))
    return fit_head(head, train, val, config, meta, seed, None, progress, weights)


def evaluate(head: FitResult | nn.Module, dataset: TileDataset, meta: HeadMeta | None = None, device: str = "cpu",
             batch_size: int = 8, progress: bool = False) -> Evaluation:
    """Metrics of a head on a dataset's tiles (pixel, per class, per slide and patient, boundary F1);
    ``head`` is a :class:`FitResult`, or a module with its ``meta`` (as :func:`load_head` returns them)."""
    if isinstance(head, FitResult):
        head, meta = head.head, head.meta
    if meta is None:
        raise ConfigError("evaluate needs the head's meta: pass a FitResult, or load_head's (head, meta)")
    return evaluate_head(head, meta, dataset.wheres, dataset.indices, device, batch_size, keep_samples=0,
                         progress=progress)


def save_run(result: FitResult, run_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``result`` as a run directory that ``pathsegdiff evaluate RUN`` and ``predict --head RUN`` read."""
    run_dir = Path(run_dir)
    meta = result.meta
    config = TrainConfig.from_dict(meta.train)
    prepare_run_dir(run_dir, config, meta.store_identity, overwrite, list(meta.stores))
    sub = f"runs/seed_{meta.seed}"
    save_head(run_dir / sub, result.head, meta)
    (run_dir / sub / "history.json").write_text(json.dumps(clean_json(result.history), indent=1))
    doc = {"config": config.to_dict(), "stores": list(meta.stores), "store_identity": meta.store_identity,
           **({"head_code": meta.code.to_dict()} if meta.code else {}), "status": "done", "best_run": sub}
    (run_dir / RUN_META).write_text(json.dumps(clean_json(doc), indent=1))
    return run_dir
