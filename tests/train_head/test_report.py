"""What a run's report says and draws: summary.md, its figures, and one colour per class everywhere."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pathsegdiff.predict.outputs import overlay, with_legend, write_geojson
from pathsegdiff.train_head import plots
from pathsegdiff.colours import class_colour, class_colours
from pathsegdiff.train_head.metrics import ConfusionMatrix, per_patient_summary, per_slide_summary
from pathsegdiff.train_head.report import summary_markdown, write_report

CLASSES = ("background", "hematoxylin-dense", "eosin-dense")


def confusion(slide_seed: int = 0) -> ConfusionMatrix:
    rng = np.random.default_rng(slide_seed)
    cm = ConfusionMatrix(3)
    cm.update(rng.integers(0, 3, 500), rng.integers(0, 3, 500))
    return cm


def results(n_slides: int = 1, **extra) -> dict:
    cm = confusion()
    return {
        **cm.summary(CLASSES), "head": "fcn", "store": "demo/features.zarr", "split": "test", "n_tiles": 19,
        "runs": 1, "store_identity": "abc", "blocks": ["up1"], "timesteps": [50], "n_train_tiles": 132,
        "label_fraction": 1.0, "n_val_tiles": 21, "val_source": "store",
        "per_slide": per_slide_summary({f"slide{i}": confusion(i) for i in range(n_slides)}), **extra,
    }


def sample(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    labels[:4] = 255
    return {"index": seed, "tile_id": f"tile{seed}", "rgb": rng.integers(0, 256, (3, 32, 32), dtype=np.uint8),
            "labels": labels, "predicted": rng.integers(0, 3, (32, 32))}


def test_one_slide_has_no_spread_and_says_so():
    text = summary_markdown(results(n_slides=1))
    assert "one slide (slide0)" in text
    assert "spread across" in text and "| std |" not in text and "## Per slide" not in text


def test_several_slides_get_the_spread_table():
    text = summary_markdown(results(n_slides=3))
    assert "## Per slide" in text and "Each of the 3 slides" in text
    assert re.search(r"^\| miou \| [0-9.]+ \| [0-9.]+ \|", text, re.MULTILINE)


def test_per_patient_section_lists_each_patient_with_its_slides_and_the_spread():
    pats = per_patient_summary({"P1": confusion(1), "P2": confusion(2)}, {"P1": {"a1", "b1"}, "P2": {"a2"}})
    text = summary_markdown(results(n_slides=3, per_patient=pats, stores=["a.zarr", "b.zarr"]))
    assert text.splitlines()[0] == "# fcn head on a.zarr + b.zarr (test split)"
    assert "## Per slide" in text and "## Per patient" in text and "Each of the 2 patients" in text
    assert re.search(r"^\| P1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 500 \| a1, b1 \|$", text, re.MULTILINE)
    m = pats["spread"]["miou"]
    assert f"| miou | {m['mean']:.4f} | {m['std']:.4f} | {m['min']:.4f} | {m['max']:.4f} | 2 |" in text
    assert "the 21 tiles the stores mark `val`" in text


def test_many_slides_list_the_lowest_first_and_stop_at_thirty():
    text = summary_markdown(results(n_slides=35))
    section = text[text.index("## Per slide"):]
    rows = re.findall(r"^\| (slide\d+) \| ([0-9.]+) \|", section, re.MULTILINE)
    assert len(rows) == 30 and "results.json has all" in section
    mious = [float(v) for _, v in rows]
    assert mious == sorted(mious)
    everyone = results(n_slides=35)["per_slide"]["slides"]
    assert mious[0] == pytest.approx(min(v["miou"] for v in everyone.values()), abs=1e-4)


def test_validation_source_is_explained():
    assert "the 21 tiles the store marks `val`" in summary_markdown(results())
    carved = summary_markdown(results(val_source="carved from train: 2 of 5 slides (seed 0)"))
    assert "validation: 21 tiles carved from train: 2 of 5 slides (seed 0)" in carved


def test_pseudo_labels_are_named():
    stain = "stain_classes (colour deconvolution), see stain_labels.py"
    text = summary_markdown(results(label_source=stain, pseudo_labels=True))
    assert "stain-derived pseudo-labels" in text and stain in text
    assert "pseudo-labels" not in summary_markdown(results(label_source="masks/", pseudo_labels=False))
    assert "labels:" not in summary_markdown(results())  # the store does not say: no claim either way


def test_summary_links_every_figure_and_the_files_exist(tmp_path):
    histories = {"seed 0": [{"epoch": 1, "train_loss": 1.0, "val_miou": 0.3},
                            {"epoch": 2, "train_loss": 0.7, "val_miou": 0.5}]}
    write_report(tmp_path, results(), confusion(), [sample(0), sample(1)], histories, CLASSES, 255)
    text = (tmp_path / "summary.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(set(links)) == ["plots/confusion_matrix.png", "plots/learning_curves.png", "plots/overlays.png"]
    assert text.count("![") == 3 and all((tmp_path / link).is_file() for link in links)
    assert json.loads((tmp_path / "results.json").read_text())["plots"] == [
        "plots/learning_curves.png", "plots/confusion_matrix.png", "plots/overlays.png"]


def test_no_figures_no_links(tmp_path):
    write_report(tmp_path, results(), confusion(), [], None, CLASSES, 255, plots=False)
    assert "](" not in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "plots").exists()


def test_confusion_matrix_grows_with_the_classes(tmp_path):
    sizes = []
    for n in (2, 3, 12):
        names = [f"class number {i}" for i in range(n)]
        plots.confusion_matrix(np.eye(n), names, tmp_path / f"cm{n}.png")
        sizes.append(Image.open(tmp_path / f"cm{n}.png").size)
    assert sizes[0][0] >= 500 and sizes[0][1] >= 420  # the old figure was 330 x 280 px
    assert sizes[0] <= sizes[1] and all(a < b for a, b in zip(sizes[1], sizes[2]))


def test_a_class_has_one_colour_in_run_overlays_and_the_slide_overlay(tmp_path):
    s = sample(0)
    run_overlay = plots._blend(s["rgb"], s["labels"], 255)  # what plots/overlays.png shows
    # The ignore value 255 is also the slide overlay's "not analysed": both leave those pixels as they are.
    slide_overlay = overlay(s["rgb"].transpose(1, 2, 0), s["labels"])
    assert np.array_equal(run_overlay, slide_overlay)
    assert class_colour(1) == (214, 39, 40)  # hematoxylin-dense: red in both (the run overlay used orange)

    strip = with_legend(slide_overlay, CLASSES)[32:]  # the legend under the 32 px picture
    swatches = {tuple(px) for px in strip.reshape(-1, 3)}
    assert all(class_colour(k) in swatches for k in range(3))

    n = write_geojson(np.array([[0, 1], [2, 1]], np.uint8).repeat(8, 0).repeat(8, 1), 1.0, CLASSES,
                      tmp_path / "regions.geojson", min_area_px=1)
    features = json.loads((tmp_path / "regions.geojson").read_text())["features"]
    assert n == len(features) and features
    for f in features:
        assert tuple(f["properties"]["classification"]["color"]) == class_colour(f["properties"]["class_id"])


@pytest.mark.parametrize("n", [3, 25])
def test_class_colours_are_distinct_up_to_twenty(n):
    colours = class_colours(n)
    assert colours.shape == (n, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours[:20]}) == min(n, 20)
