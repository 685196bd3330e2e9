"""``pathsegdiff demo``: the whole job on a real H&E slide, offline, on a laptop CPU.

1. Read the CC0 Aperio slide ``cmu_small_region.svs`` (H&E skin, 0.499 um/px)
   as a whole-slide image, detect tissue, tile it at 0.5 um/px.
2. Label every tile with the stain-derived three-class map of
   :mod:`pathsegdiff.tiles.stain_labels` (background / hematoxylin-dense /
   eosin-dense, from colour deconvolution): honest pseudo-labels, not an
   annotation.  Tiles are split train/val/test by spatial blocks.
3. Extract features with ``he-tiny`` (the tiny architecture trained by
   ``pathsegdiff pretrain`` on this slide without the demo's test tiles;
   ``--model tiny`` for the seeded, untrained one) into ``DIR/features.zarr``.
4. Train the ``fcn`` head on the train tiles, evaluate on the held-out tiles
   (``DIR/run/``).
5. Predict the whole slide from the stored features of its overlapping tiles
   (the model runs only for the slide's tiles the store lacks: those with too
   little tissue to be extracted), fused by a Gaussian window
   (``DIR/prediction/``), and save the overlay as ``DIR/slide_prediction.png``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pathsegdiff.errors import InputError
from pathsegdiff.output_dir import OutputKind, check_output_dir, replace_output_dir, require_room

REPO_SLIDE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cmu_small_region.svs"


@dataclass(frozen=True)
class DemoConfig:
    slide: str = str(REPO_SLIDE)
    tile_size: int = 256
    stride: int = 128
    min_tissue: float = 0.25
    epochs: int = 15
    model: str = "he-tiny"  # tiny: the seeded, untrained stand-in


DEMO_OUTPUT = OutputKind("demo", names=frozenset({"features.zarr", "run", "prediction", "slide_prediction.png"}),
                         required=frozenset({"features.zarr"}))


def run_demo(out_dir: str | Path, cfg: DemoConfig = DemoConfig(), overwrite: bool = False, echo=print) -> dict:
    from pathsegdiff.extract.run.config import ExtractConfig
    from pathsegdiff.extract.run.job import run_extraction
    from pathsegdiff.tiles.stain_labels import StainLabelledSource
    from pathsegdiff.tiles.wsi import SlideSource
    from pathsegdiff.predict.run import PredictConfig, predict
    from pathsegdiff.train_head.fit import TrainConfig
    from pathsegdiff.train_head.run import train

    out = Path(out_dir)
    slide = Path(cfg.slide)
    if not slide.is_file():
        raise InputError(f"{slide}: the demo slide is missing (run the demo from a clone of the repository, "
                         "or pass --slide PATH to another H&E slide)")
    check_output_dir(out, DEMO_OUTPUT, overwrite)
    # The store's own projection is checked by extract once the model is loaded; this finds a read-only or
    # full folder before anything else runs (the run, plots and prediction take a few MiB).
    require_room(out, 16 * 2**20, "the demo")
    replace_output_dir(out, DEMO_OUTPUT, overwrite)
    t0 = time.perf_counter()
    steps = {}

    echo(f"[1/4] tiling {slide.name}: tissue detection, {cfg.tile_size} px tiles every {cfg.stride} px at 0.5 um/px")
    source = StainLabelledSource(SlideSource(slide, tile_size=cfg.tile_size, stride=cfg.stride, target_mpp=0.5,
                                             min_tissue=cfg.min_tissue))
    echo(f"      {len(source)} tiles; labels: stain-derived (glass / hematoxylin-dense / eosin-dense)")

    what = "seeded weights, NOT trained" if cfg.model == "tiny" else \
        "trained here on this slide's other tiles: a small CPU model, not a foundation model"
    echo(f"[2/4] extracting features with the {cfg.model} model ({what})")
    t = time.perf_counter()
    summary = run_extraction(source, out / "features.zarr", ExtractConfig(model=cfg.model), echo=lambda m: echo("      " + m))
    steps["extract_s"] = time.perf_counter() - t
    echo("      " + summary.line())

    echo(f"[3/4] training the fcn head for up to {cfg.epochs} epochs on the train tiles")
    t = time.perf_counter()
    results = train(str(out / "features.zarr"), out / "run", TrainConfig(head="fcn", epochs=cfg.epochs))
    steps["train_s"] = time.perf_counter() - t

    echo("[4/4] predicting the whole slide from the stored features (overlapping tiles, Gaussian fusion)")
    t = time.perf_counter()
    pred = predict(slide, out / "run", out / "prediction",
                   PredictConfig(model=cfg.model, overlap=cfg.tile_size - cfg.stride, store=str(out / "features.zarr")),
                   overwrite=True)
    shutil.copyfile(out / "prediction" / "overlay.png", out / "slide_prediction.png")
    steps["predict_s"] = time.perf_counter() - t
    steps["total_s"] = time.perf_counter() - t0

    echo(final_screen(out, results, pred, steps, cfg.model))
    return {"results": results, "prediction": pred, "seconds": steps}


def _metric(results: dict, key: str) -> float:
    v = results.get(key)
    return float(v["mean"] if isinstance(v, dict) else v)


def _model_note(model: str) -> str:
    if model == "tiny":
        return "the tiny model's weights are random: this shows the pipeline, not science"
    if model == "he-tiny":
        return "he-tiny was trained on one small CC0 slide on a CPU: it shows the method, not a pathology model"
    return f"model {model}"


def final_screen(out: Path, results: dict, pred: dict, steps: dict, model: str = "he-tiny") -> str:
    return f"""
Done in {steps['total_s']:.0f} s (extract {steps['extract_s']:.0f} s, train {steps['train_s']:.0f} s, \
predict {steps['predict_s']:.0f} s).

Held-out tiles: pixel accuracy {_metric(results, 'pixel_accuracy'):.3f}, mIoU {_metric(results, 'miou'):.3f}, \
mDice {_metric(results, 'mdice'):.3f}
(labels are stain-derived pseudo-labels, computed from colour; {_model_note(model)})

  {out}/features.zarr         the feature store       pathsegdiff store info {out}/features.zarr
  {out}/run/                  head, results.json, summary.md, plots/
  {out}/slide_prediction.png  the slide with the predicted map overlaid
  {out}/prediction/           mask.tif (pyramidal), regions.geojson (QuPath: File > Import objects)

The real model: download the BRCA-20x LDM and the HIPT weights (README, "The real workflow"), then
  pathsegdiff extract SLIDES_OR_TILES -o features.zarr --model LDM_DIR --conditioning hipt:vit256_small_dino.pth --device cuda --dtype bf16
"""
