"""``pathsegdiff predict``: a trained head applied to a whole image or slide, tiles fused into one map.

Features come from the diffusion model on the fly (the same model, seed,
draws and conditioning the head's store was made with: checked against the
head's recorded store identity) or from an existing store of the same slide
(``--store``).  With a store, every planned tile (every tile of the slide that
holds tissue, edges included) is read from it or, when the store lacks it and
a model is given, computed; without a model a store that lacks tiles is
refused with how many and why (``coverage.py``), never used for part of the slide.  Tile logits are fused with a centre-weighted window
(:mod:`pathsegdiff.predict.stitch`) strip by strip into a disk-backed mask.
On a PCA store a built-in head reads the stored tiles' coefficients with its
first layer composed onto them, not decoded features (``train_head/read_path.py``;
``feature_path`` in prediction.json); computed tiles go through the head as it is.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pathsegdiff.errors import ConfigError
from pathsegdiff.output_dir import OutputKind, check_output_dir, replace_output_dir, require_room, written_or_removed
from pathsegdiff.predict.coverage import match_store
from pathsegdiff.predict.inputs import ImageInput, SlideInput, open_input
from pathsegdiff.predict.outputs import MaskCanvas, overlay, write_geojson, write_png, write_pyramid_tiff
from pathsegdiff.train_head.checkpoint import load_head
from pathsegdiff.train_head.data import to_device
from pathsegdiff.train_head.heads import HeadInputs, needs_rgb
from pathsegdiff.train_head.heads.protocol import logits as head_logits
from pathsegdiff.train_head.read_path import read_path
from pathsegdiff.predict.stitch import LogitFuser, StitchConfig

GEOJSON_MAX_SIDE = 4096


@dataclass(frozen=True)
class PredictConfig:
    model: str | None = "tiny"  # None with a store: use only the store, refuse if it lacks tiles
    conditioning: str = "null"
    overlap: int | None = None  # None: a quarter of the tile
    window: str = "gaussian"
    batch_size: int = 8
    device: str = "cpu"
    target_mpp: float = 0.5
    min_tissue: float = 0.0  # 0: every tile that holds any tissue
    store: str | None = None
    source_mpp: float | None = None  # a plain image's resolution; None: assume target_mpp
    head_code: str | None = None  # a plug-in head's code when its recorded file is gone or changed (same SHA-256)
    compose: bool = True  # a PCA store's tiles: a built-in head reads their coefficients (False: decode them)


class PredictResult(dict):
    """prediction.json's content, plus where it was written; ``line()`` is what the command line prints."""

    def __init__(self, summary: dict, where: str | Path):
        super().__init__(summary)
        self.where = Path(where)

    def line(self) -> str:
        return (f"{self['tiles']} tiles ({self['from_store']} from the store, {self['computed']} computed), "
                f"{self['regions']} regions in {self['seconds']} s -> {self.where}/ "
                f"({self['outputs']['mask']}, overlay.png, regions.geojson, prediction.json)")


def _check_model_matches(meta, backbone, conditioner, cfg: PredictConfig) -> None:
    """The model and conditioning must be the ones the head's features came from; the error names them."""
    want = meta.store_identity_fields
    have = {"model_id": backbone.model_id, "weights_sha256": backbone.weights_sha256,
            "conditioning": conditioner.name}
    diff = {k: (want.get(k), v) for k, v in have.items() if want.get(k) != v}
    if not diff:
        return
    fix = []
    if "model_id" in diff or "weights_sha256" in diff:
        fix.append(f"--model {_model_option(str(want.get('model_id')))}")
    if "conditioning" in diff:
        fix.append(f"--conditioning {want.get('conditioning')} (with the file it was extracted with)")
    fields = "; ".join(f"{k}: head's features {a!r}, this run {b!r}" for k, (a, b) in diff.items())
    raise ConfigError(f"the head was trained on features of model {want.get('model_id')} with conditioning "
                      f"{want.get('conditioning')}, not {cfg.model} with {cfg.conditioning} ({fields}); "
                      f"pass {' and '.join(fix)}")


def _model_option(model_id: str) -> str:
    """What to pass as --model for a recorded model id: a built-in's name, else the model directory it names."""
    from pathsegdiff.extract.backbones.registry import builtin_ids

    for name in sorted(builtin_ids(), key=len, reverse=True):
        if re.fullmatch(rf"{re.escape(name)}-v\d+", model_id):
            return name
    kind, _, folder = model_id.partition(":")
    return f"the model directory '{folder or model_id}' the store was extracted with"


def _featurizer(cfg: PredictConfig, meta):
    """The head's model, conditioning and feature selection, checked against the head's store identity."""
    from pathsegdiff.extract.conditioning import make_conditioner
    from pathsegdiff.extract.featurize import FeatureConfig, Featurizer, load_on_device

    backbone = load_on_device(cfg.model, cfg.device)
    conditioner = make_conditioner(cfg.conditioning, backbone, device=cfg.device)
    _check_model_matches(meta, backbone, conditioner, cfg)  # before the head's blocks are looked up in the model
    ident = meta.store_identity_fields
    fcfg = FeatureConfig(blocks=meta.blocks, timesteps=meta.timesteps, draws=int(ident.get("draws", 1)),
                         seed=int(ident.get("noise_seed", 0)))
    return Featurizer(backbone, fcfg, conditioner)


def _computed(featurizer, items: list, source) -> list[dict]:
    """Features of planned tiles, one model batch; rounded through the store dtype as the head was trained."""
    rgb = torch.from_numpy(np.stack([source.tile_rgb(t.key) for t in items]))
    # Tile ids as the extraction sources name them, so the noise matches a store of the same tiles.
    feats = featurizer(rgb, [t.tile_id for t in items], out_dtype=torch.float16).features
    feats = {t: {b: v.float().cpu() for b, v in d.items()} for t, d in feats.items()}
    return [{t: {b: v[k : k + 1] for b, v in d.items()} for t, d in feats.items()} for k in range(len(items))]


def _extracted_tiles(source, featurizer, cfg: PredictConfig, stitch: StitchConfig) -> Iterator[tuple[int, int, dict]]:
    """(y, x, features) per planned tile, running the model in batches."""
    plan = source.plan(stitch)
    for k in range(0, len(plan), cfg.batch_size):
        items = plan[k : k + cfg.batch_size]
        for t, feats in zip(items, _computed(featurizer, items, source)):
            yield t.y, t.x, feats


def _stored(fs, i: int, meta, coefficients: bool) -> dict:
    tile = fs.read_tile(i, blocks=meta.blocks, timesteps=meta.timesteps, extras=False, coefficients=coefficients)
    return {t: {b: torch.from_numpy(v[None].astype(np.float32)) for b, v in d.items()} for t, d in tile.features.items()}


def _store_tiles(source, cfg: PredictConfig, head, meta, stitch: StitchConfig, echo) -> tuple[Iterator, dict]:
    """(y, x, features, head) per planned tile from the store, the ones it lacks computed; refused without a
    model.  A stored tile's head is the one its read path takes (composed onto a PCA store's coefficients)."""
    from pathsegdiff.store import open_store
    from pathsegdiff.train_head.checkpoint import check_store_matches

    fs = open_store(cfg.store)
    check_store_matches(meta, fs, need_labels=False)
    plan = source.plan(stitch)
    cov = match_store(fs, plan, Path(source.path).stem, source.mpp, stitch.tile, stitch.stride)
    if cov.missing and not cfg.model:
        raise ConfigError(f"{cfg.store}: {cov.line(len(plan))} for {Path(source.path).name}; pass --model (the "
                          "model the store was made with) to compute the missing tiles, or extract them first")
    featurizer = _featurizer(cfg, meta) if cov.missing else None
    if cov.missing:
        echo(f"{cov.line(len(plan))}: computing those with model {cfg.model}")
    path = read_path(head, fs, cfg.compose, echo)

    def tiles():
        for k in range(0, len(plan), cfg.batch_size):
            items = plan[k : k + cfg.batch_size]
            todo = [t for t in items if t.tile_id not in cov.stored]
            computed = dict(zip((t.tile_id for t in todo), _computed(featurizer, todo, source))) if todo else {}
            for t in items:
                if t.tile_id in computed:
                    yield t.y, t.x, computed[t.tile_id], head
                else:
                    yield t.y, t.x, _stored(fs, cov.stored[t.tile_id], meta, path.coefficients), path.head

    return tiles(), {"from_store": len(cov.stored), "computed": len(cov.missing), **path.record()}


PREDICT_OUTPUT = OutputKind(
    "predict", names=frozenset({"mask.tif", "mask.png", "mask.u8", "overlay.png", "regions.geojson", "prediction.json"}),
    required=frozenset({"prediction.json"}))


def predict(input_path: str | Path, head_run: str | Path, out_dir: str | Path, cfg: PredictConfig = PredictConfig(),
            overwrite: bool = False, echo=lambda line: None) -> PredictResult:
    """Predict a class map for one image or slide; returns a summary (also written to OUT/prediction.json)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    check_output_dir(out, PREDICT_OUTPUT, overwrite)
    head, meta = load_head(head_run, device=cfg.device, head_code=cfg.head_code)
    tile = int(meta.store_identity_fields.get("tile_size", 256))
    stitch = StitchConfig(tile=tile, overlap=tile // 4 if cfg.overlap is None else cfg.overlap, window=cfg.window)
    source = open_input(input_path, tile, stitch, cfg.target_mpp, cfg.min_tissue, cfg.source_mpp)
    # the disk-backed mask (1 byte a pixel), the pyramidal mask beside it, and small files
    require_room(out, 2 * source.height * source.width + 16 * 2**20, "the prediction")
    echo(source.preflight(stitch))
    if cfg.store:
        tiles, origin = _store_tiles(source, cfg, head, meta, stitch, echo)
    else:  # the model is loaded and checked now, not when the first tile is asked for
        if not cfg.model:
            raise ConfigError("predict needs --model (or --store with the slide's features)")
        tiles = ((y, x, f, head) for y, x, f in _extracted_tiles(source, _featurizer(cfg, meta), cfg, stitch))
        origin = {"from_store": 0, "computed": source.n_tiles(stitch)}
    rgb_of = {(t.y, t.x): t.key for t in source.plan(stitch)} if needs_rgb(head) else None  # rgb-fcn: the tile's RGB
    with written_or_removed(out, "the prediction"):  # a disk that fills meanwhile: one line, nothing left
        replace_output_dir(out, PREDICT_OUTPUT, overwrite)
        summary = _write_prediction(out, source, meta, tiles, stitch, rgb_of, cfg.device)
        summary.update({"input": str(input_path), "head": str(head_run), **origin, "config": asdict(cfg),
                        "stitch": stitch.to_dict(), "seconds": round(time.perf_counter() - t0, 1)})
        (out / "prediction.json").write_text(json.dumps(summary, indent=1))
    return PredictResult(summary, out)


def _write_prediction(out: Path, source, meta, tiles, stitch: StitchConfig, rgb_of: dict | None,
                      device: str) -> dict:
    """Fuse the tiles' logits into the mask, write the mask, GeoJSON and overlay; the summary's own fields.

    ``rgb_of``: (y, x) -> the tile's key in ``source``, for a head that also takes the tile's RGB."""
    tile = stitch.tile
    canvas = MaskCanvas(source.height, source.width, out)
    fuser = LogitFuser(source.height, source.width, len(meta.class_names), stitch)
    n = 0
    try:
        with torch.no_grad(), tqdm(total=source.n_tiles(stitch), desc="predict", unit="tile") as bar:
            for y, x, feats, tile_head in tiles:
                rgb = None if rgb_of is None else torch.from_numpy(  # (1, 3, S, S) in [0, 1]
                    np.ascontiguousarray(source.tile_rgb(rgb_of[(y, x)]))[None]).float().div(255).to(device)
                inputs = HeadInputs(to_device(feats, torch.device(device)), (tile, tile), rgb)
                logits = head_logits(tile_head, inputs, len(meta.class_names))[0].float().cpu().numpy()  # (K, S, S)
                for y0, strip in fuser.add(y, x, logits):
                    canvas.put_strip(y0, strip)
                n += 1
                bar.update()
        for y0, strip in fuser.finish():
            canvas.put_strip(y0, strip)
        slide = isinstance(source, SlideInput)
        mask_path = out / ("mask.tif" if slide else "mask.png")
        if slide:
            write_pyramid_tiff(canvas.mask, mask_path, source.mpp)
        else:
            write_png(canvas.mask, mask_path)
        small, step = canvas.downsampled(GEOJSON_MAX_SIDE)
        n_regions = write_geojson(small, step, meta.class_names, out / "regions.geojson")
        thumb = source.thumbnail()
        Image.fromarray(overlay(thumb, small, class_names=meta.class_names)).save(out / "overlay.png")
        counts = np.bincount(small.ravel(), minlength=256)
    finally:
        canvas.close()
    return {
        "kind": "slide" if slide else "image",
        "width": source.width, "height": source.height,  # as the console prints it: W x H
        "mpp": source.mpp if source.mpp == source.mpp else None, "tiles": n, "regions": n_regions,
        "class_fractions": {name: float(counts[k] / max(1, counts[: len(meta.class_names)].sum()))
                            for k, name in enumerate(meta.class_names)},
        "outputs": {"mask": mask_path.name, "overlay": "overlay.png", "geojson": "regions.geojson"},
    }


__all__ = ["ImageInput", "PredictConfig", "PredictResult", "SlideInput", "predict"]
