"""Head checkpoints: weights in safetensors, everything else in JSON; never pickle.

A checkpoint directory holds ``head.safetensors`` and ``head.json``.  The JSON
carries the head config (enough to rebuild the module), the class names and
ignore value, the identity of the store(s) it was trained on and their
locations (``stores``; a checkpoint written before several stores names one
``store_location``, read as a one-store list), and the run config.  :func:`load_head` rebuilds the module from the JSON and loads the
weights into it.  A plug-in head's JSON also records its code (``code``: class
path, file, SHA-256; ``heads/plugins.py``): it is rebuilt only from code of that
hash.  A checkpoint written before plug-ins has no ``code`` and a built-in head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.store import FeatureStore
from pathsegdiff.train_head.heads import HeadCode, HeadConfig, build_head, load_class

FORMAT = "pathsegdiff-head"
FORMAT_VERSION = 1
WEIGHTS = "head.safetensors"
META = "head.json"
RUN_META = "run.json"  # written by fit at the run root; names the best run's checkpoint
MAX_META_BYTES = 16 * 2**20  # a head.json is a few KiB: refuse to parse a huge one


@dataclass(frozen=True)
class HeadMeta:
    """Everything saved beside the weights."""

    head: HeadConfig
    class_names: tuple[str, ...]
    ignore_index: int
    store_identity: str
    store_identity_fields: dict[str, Any]
    stores: tuple[str, ...] = ()  # where the training stores were, in the order given
    train: dict[str, Any] = field(default_factory=dict)  # the run config, as TrainConfig.to_dict()
    seed: int = 0
    epoch: int = 0
    val_miou: float | None = None
    coefficients: dict[str, Any] | None = None  # trained on a PCA store's coefficients: its encoding, basis_sha256
    code: HeadCode | None = None  # a plug-in head's class path, file and SHA-256; None for a built-in

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.head.blocks)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.head.timesteps

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "head": self.head.to_dict(),
            "class_names": list(self.class_names), "ignore_index": self.ignore_index,
            "store_identity": self.store_identity, "store_identity_fields": self.store_identity_fields,
            "stores": list(self.stores), "train": self.train, "seed": self.seed, "epoch": self.epoch,
            "val_miou": self.val_miou, "coefficients": self.coefficients,
            "code": self.code.to_dict() if self.code else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadMeta:
        if d.get("format") != FORMAT or not isinstance(d.get("format_version"), int):
            raise ConfigError("not a pathsegdiff head checkpoint (format field missing)")
        if d["format_version"] > FORMAT_VERSION:
            raise ConfigError(f"head checkpoint format {d['format_version']} is newer than this pathsegdiff reads")
        d = {k: v for k, v in d.items() if k not in ("format", "format_version")}
        d["head"] = HeadConfig.from_dict(d["head"])
        d["class_names"] = tuple(d["class_names"])
        old = d.pop("store_location", "")  # one store, as checkpoints recorded it before several
        d["stores"] = tuple(d.get("stores") or ((old,) if old else ()))
        d["code"] = HeadCode.from_dict(d["code"]) if d.get("code") else None
        return cls(**d)


def save_head(directory: str | os.PathLike, module: nn.Module, meta: HeadMeta) -> None:
    """Write weights and meta; each file is replaced atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # clones: tensors that share memory (tied weights, views) are refused by safetensors
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, d / (WEIGHTS + ".tmp"), metadata={"format": FORMAT})
    os.replace(d / (WEIGHTS + ".tmp"), d / WEIGHTS)
    (d / (META + ".tmp")).write_text(json.dumps(meta.to_dict(), indent=1))
    os.replace(d / (META + ".tmp"), d / META)


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """The directory holding the head: ``run_dir`` itself, or the best run named in its run.json."""
    d = Path(run_dir)
    if (d / META).is_file():
        return d
    if (d / RUN_META).is_file():
        best = json.loads((d / RUN_META).read_text()).get("best_run")
        if best and (d / best / META).is_file():
            return d / best
    raise InputError(f"{d}: no trained head here (no {META}, nor a {RUN_META} naming one)")


def recorded_stores(run_dir: str | os.PathLike) -> list[str]:
    """The stores the head in ``run_dir`` was trained on, as the run recorded them.

    The head's JSON says first; else the run root's ``run.json`` (``stores``,
    or ``store`` in a run written before training took several).
    """
    d = checkpoint_dir(run_dir)
    where = list(_read_meta(d / META).stores)
    root = Path(run_dir) / RUN_META
    if not where and root.is_file():
        doc = json.loads(root.read_text())
        where = list(doc.get("stores") or ([doc["store"]] if doc.get("store") else []))
    if not where:
        raise InputError(f"{d}: the run does not record its store; pass --store")
    return where


def run_root(run_dir: str | os.PathLike) -> Path:
    """The run directory that holds ``run_dir``: the nearest of it and its parents with a run.json."""
    d = Path(run_dir).resolve()
    return next((p for p in (d, *d.parents) if (p / RUN_META).is_file()), d)


def load_head(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
              head_code: str | os.PathLike | None = None) -> tuple[nn.Module, HeadMeta]:
    """Rebuild the head saved in ``run_dir`` (a run root or one run's directory), in eval mode.

    The module takes a ``HeadInputs`` (built-in heads also a bare
    ``{timestep: {block: tensor (B, C, h, w)}}``) and returns logits (B, K, H, W)
    at label resolution.  A plug-in head is rebuilt from its recorded file
    while that has the recorded SHA-256, else from ``head_code`` (a file of
    that hash), else refused.
    """
    d = checkpoint_dir(run_dir)
    try:
        meta = _read_meta(d / META)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{d}: cannot load the head checkpoint: {e}") from None
    cls = load_class(meta.head, meta.code, None if head_code is None else str(head_code), run_root(run_dir))
    try:
        if cls is None:
            _check_weight_shapes(meta, d / WEIGHTS)  # before building: a crafted head.json must not allocate
        module = build_head(meta.head, cls)
        module.load_state_dict(load_file(d / WEIGHTS, device="cpu"), strict=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError) as e:
        raise InputError(f"{d}: cannot load the head checkpoint: {e}") from None
    return module.to(device).eval(), meta


def _read_meta(path: Path) -> HeadMeta:
    if path.stat().st_size > MAX_META_BYTES:
        raise ConfigError(f"{path.name} is {path.stat().st_size:,} bytes, not a head description")
    try:
        doc = json.loads(path.read_text())
    except RecursionError:  # a crafted file nested deeper than the parser's stack
        raise ConfigError(f"{path.name} is nested too deeply to be a head description") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path.name} holds a JSON {type(doc).__name__}, not a head description")
    return HeadMeta.from_dict(doc)


def _check_weight_shapes(meta: HeadMeta, weights: Path) -> None:
    """The file's tensors must be exactly those of the head the JSON describes (built on the meta device)."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build_head(meta.head).state_dict().items()}
    with safe_open(str(weights), framework="pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if have != want:
        bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        detail = ", ".join(f"{k}: file {have.get(k)}, {META} {want.get(k)}" for k in bad[:3])
        raise ValueError(f"{WEIGHTS} does not match {META} ({len(bad)} tensors differ: {detail})")


ALLOWED_TO_DIFFER = ("blocks", "timesteps", "compute_dtype", "encoding", "basis_sha256")


def check_store_matches(meta: HeadMeta, store: FeatureStore, need_labels: bool = True) -> None:
    """Refuse a store whose features differ from those the head was trained on.

    The store may hold other blocks or timesteps than the training store (its
    identity hash then differs), come from another compute dtype (bf16
    features read by an fp32-trained fcn head cost 0.002 mIoU in
    bench/numerics.py) or be stored in another compact encoding (the reader
    decodes to the same shapes: evaluating a float16-trained head on a compact
    copy is how a user measures what the encoding costs), but every other
    identity field must match and the head's blocks must be there with the
    same shapes.
    """
    have = dict(store.meta.get("identity_fields", {}))
    want = dict(meta.store_identity_fields)
    differing = sorted(k for k in set(have) | set(want)
                       if k not in ALLOWED_TO_DIFFER and have.get(k) != want.get(k))
    if differing:
        detail = "; ".join(f"{k}: head {want.get(k)!r}, store {have.get(k)!r}" for k in differing)
        raise InputError(
            f"{store.location}: features differ from those the head was trained on "
            f"(store identity {store.identity}, head trained on {meta.store_identity}): {detail}"
        )
    for b in meta.head.blocks:
        if b.name not in store.blocks or store.schema.features.block(b.name) != b:
            raise InputError(f"{store.location}: the head needs block {b.name} {b.shape}, which this store lacks")
    for t in meta.head.timesteps:
        if t not in store.timesteps:
            raise InputError(f"{store.location}: the head needs timestep {t}, which this store lacks")
    if need_labels and tuple(store.schema.class_names) != meta.class_names:
        raise InputError(
            f"{store.location}: classes {list(store.schema.class_names)} differ from the head's {list(meta.class_names)}"
        )
