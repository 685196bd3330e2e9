"""Tile sources: image folders, BCSS, GlaS and whole-slide images, and the input each refuses.

Everything is built in ``tmp_path`` from small synthetic images (tiles of 32
or 64 px), except the slide tests, which use the real Aperio slide in
tests/data (see tests/data/README.md).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathsegdiff.errors import InputError
from pathsegdiff.tiles.datasets import SourceConfig, open_source
from pathsegdiff.tiles.sources import IGNORE, grid_positions

DATA = Path(__file__).resolve().parents[1] / "data"
SLIDE = DATA / "cmu_small_region.svs"


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _folder(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None,
            classes: tuple[str, ...] | None = ("background", "a", "b")) -> Path:
    for stem, a in images.items():
        _save(root / "images" / f"{stem}.png", a)
    for stem, m in (masks or {}).items():
        _save(root / "masks" / f"{stem}.png", m)
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _load_all(source) -> list:
    return [source.load(i) for i in range(len(source))]


# --- the grid ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length, tile, stride, expected", [
    (128, 32, 32, [0, 32, 64, 96]),  # exact fit
    (100, 32, 32, [0, 32, 64, 68]),  # last tile shifted back to end at the border
    (100, 32, 16, [0, 16, 32, 48, 64, 68]),
    (100, 32, 50, [0, 50, 68]),  # stride larger than the tile: gaps, still ends at the border
    (32, 32, 32, [0]),
    (31, 32, 32, []),  # smaller than a tile
])
def test_grid_positions(length, tile, stride, expected):
    assert grid_positions(length, tile, stride) == expected


# --- image folder -----------------------------------------------------------------------------


def test_folder_with_masks_matches_by_stem_and_reads_classes(tmp_path):
    a, b = _rgb(64, 64, 1), _rgb(64, 64, 2)
    ma = np.zeros((64, 64), np.uint8)
    ma[:, 32:] = 2
    mb = np.ones((64, 64), np.uint8)
    mb[0, 0] = IGNORE  # the ignore value is allowed in a mask
    root = _folder(tmp_path / "ds", {"a": a, "b": b}, {"b": mb, "a": ma})
    src = open_source(root, SourceConfig(tile_size=32))
    assert src.class_names == ("background", "a", "b")
    assert len(src) == 8
    by_id = {r.tile_id: i for i, r in enumerate(src.records)}
    s = src.load(by_id["a_32_0"])
    np.testing.assert_array_equal(s.rgb, a[:32, 32:64].transpose(2, 0, 1))
    assert s.rgb.dtype == np.uint8 and s.rgb.shape == (3, 32, 32) and s.rgb.flags.c_contiguous
    np.testing.assert_array_equal(s.labels, np.full((32, 32), 2, np.uint8))
    s = src.load(by_id["b_0_0"])
    np.testing.assert_array_equal(s.rgb, b[:32, :32].transpose(2, 0, 1))
    assert s.labels[0, 0] == IGNORE and (s.labels.ravel()[1:] == 1).all()
    assert s.instances is None and not src.has_instances
    assert {r.slide_id for r in src.records} == {"a", "b"}


def test_flat_folder_and_single_file_have_no_labels(tmp_path):
    a = _rgb(40, 72, 3)
    _save(tmp_path / "flat" / "one.png", a)
    _save(tmp_path / "flat" / "two.jpg", _rgb(32, 32, 4))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    src = open_source(tmp_path / "flat", SourceConfig(tile_size=32))
    assert src.class_names == ()
    assert sorted(r.slide_id for r in src.records) == ["one"] * 6 + ["two"]
    assert all(s.labels is None for s in _load_all(src))

    single = open_source(tmp_path / "flat" / "one.png", SourceConfig(tile_size=32))
    assert [r.tile_id for r in single.records] == ["one_0_0", "one_32_0", "one_40_0", "one_0_8",
                                                    "one_32_8", "one_40_8"]
    np.testing.assert_array_equal(single.load(5).rgb, a[8:40, 40:72].transpose(2, 0, 1))


def test_class_names_from_config_override_the_file(tmp_path):
    root = _folder(tmp_path / "ds", {"a": _rgb(32, 32)}, {"a": np.zeros((32, 32), np.uint8)})
    src = open_source(root, SourceConfig(tile_size=32, class_names=("x", "y")))
    assert src.class_names == ("x", "y")
    (root / "classes.txt").unlink()
    (root / "classes").write_text("only\n\n")
    assert open_source(root, SourceConfig(tile_size=32)).class_names == ("only",)


def test_large_image_tiled_with_stride_and_last_tile_shifted_back(tmp_path):
    a = _rgb(80, 100, 5)
    mask = (np.arange(100)[None, :] // 10 % 3).repeat(80, 0).astype(np.uint8)
    root = _folder(tmp_path / "ds", {"big": a}, {"big": mask})
    src = open_source(root, SourceConfig(tile_size=32, stride=24, split="val"))
    xs, ys = [0, 24, 48, 68], [0, 24, 48]
    assert [(r.x, r.y) for r in src.records] == [(x, y) for y in ys for x in xs]
    assert [r.tile_id for r in src.records][:2] == ["big_0_0", "big_24_0"]
    assert {r.split for r in src.records} == {"val"}
    for i, r in enumerate(src.records):  # every tile is the image cut at its recorded corner
        s = src.load(i)
        np.testing.assert_array_equal(s.rgb, a[r.y : r.y + 32, r.x : r.x + 32].transpose(2, 0, 1))
        np.testing.assert_array_equal(s.labels, mask[r.y : r.y + 32, r.x : r.x + 32])
    assert max(r.x for r in src.records) + 32 == 100 and max(r.y for r in src.records) + 32 == 80


def test_folder_resampled_to_target_mpp(tmp_path):
    a = np.zeros((64, 128, 3), np.uint8)
    a[:, 64:] = 200
    root = _folder(tmp_path / "ds", {"a": a}, {"a": (a[..., 0] > 0).astype(np.uint8)})
    src = open_source(root, SourceConfig(tile_size=32, mpp=0.25, target_mpp=0.5))
    assert [(r.x, r.y) for r in src.records] == [(0, 0), (64, 0)]  # native pixels
    assert all(r.mpp == pytest.approx(0.5) for r in src.records)
    s = src.load(1)
    assert s.rgb.shape == (3, 32, 32) and (s.labels == 1).all()
    # within 2 % of the target: used as it is, not resampled
    same = open_source(root, SourceConfig(tile_size=32, mpp=0.499, target_mpp=0.5))
    assert len(same) == 8 and same.records[0].mpp == pytest.approx(0.499)
    with pytest.raises(InputError, match=r"images/a.png: its resolution is unknown, so it cannot be resampled"):
        open_source(root, SourceConfig(tile_size=32, target_mpp=0.5))  # not silently left at native size


# --- BCSS -------------------------------------------------------------------------------------

BCSS_EXPECTED = {0: IGNORE, 1: 0, 19: 0, 20: 0, 2: 1, 3: 2, 10: 2, 11: 2, 4: 3}  # the rest of 1..21: other (4)


def _bcss_codes() -> np.ndarray:
    """128x128 native mask: 16x16 blocks holding codes 0..21 (each code at least twice)."""
    block = (np.arange(64) % 22).reshape(8, 8).astype(np.uint8)
    return np.kron(block, np.ones((16, 16), np.uint8))


def _bcss_root(tmp_path: Path) -> Path:
    root = tmp_path / "BCSS"
    for stem, seed in (("TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500", 1),
                       ("TCGA-OL-A5RW-DX1_xmin100_ymin200_MPP-0.2500", 2),
                       ("TCGA-S3-AA10-DX1_xmin0_ymin0_MPP-0.2500", 3)):
        _save(root / "rgbs_colorNormalized" / f"{stem}.png", _rgb(128, 128, seed))
        _save(root / "masks" / f"{stem}.png", _bcss_codes())
    return root


def test_bcss_codes_split_resampling_and_coordinates(tmp_path):
    src = open_source(_bcss_root(tmp_path), SourceConfig(dataset="bcss", tile_size=32))
    assert src.class_names == ("tumor", "stroma", "inflammatory", "necrosis", "other")
    assert len(src) == 3 * 4  # 128 px at 0.25 um/px -> 64 px at 0.5: 2 x 2 tiles of 32
    splits = {r.slide_id: r.split for r in src.records}
    assert splits == {"TCGA-A1-A0SK-DX1": "train", "TCGA-OL-A5RW-DX1": "test", "TCGA-S3-AA10-DX1": "test"}
    a1 = [r for r in src.records if r.slide_id == "TCGA-A1-A0SK-DX1"]
    # coordinates in the slide's native (0.25 um/px) frame: ROI offset + 2 x the resampled position
    assert [(r.x, r.y) for r in a1] == [(45749, 25055), (45749 + 64, 25055), (45749, 25055 + 64),
                                        (45749 + 64, 25055 + 64)]
    assert all(r.mpp == pytest.approx(0.5) for r in src.records)
    lut = np.array([BCSS_EXPECTED.get(c, 4) for c in range(22)], np.uint8)
    codes = _bcss_codes()
    seen = set()
    for i, r in enumerate(src.records):
        s = src.load(i)
        assert s.rgb.shape == (3, 32, 32)
        # resampled position (r.x - x0) / 2; each 16-px native block is an 8-px block after halving
        y0, x0 = 2 * ((i % 4) // 2) * 32, 2 * (i % 2) * 32
        expected = lut[codes[y0 : y0 + 64 : 2, x0 : x0 + 64 : 2]]
        np.testing.assert_array_equal(s.labels, expected)
        seen |= set(np.unique(s.labels).tolist())
    assert seen == {0, 1, 2, 3, 4, IGNORE}


def test_bcss_refuses_unknown_codes_and_odd_names(tmp_path):
    root = _bcss_root(tmp_path)
    bad = _bcss_codes()
    bad[:4, :4] = 30
    mask = root / "masks" / "TCGA-S3-AA10-DX1_xmin0_ymin0_MPP-0.2500.png"
    _save(mask, bad)
    src = open_source(root, SourceConfig(dataset="bcss", tile_size=32))
    with pytest.raises(InputError, match=r"TCGA-S3-AA10-DX1_xmin0_ymin0_MPP-0.2500.png.*\[30\]"):
        _load_all(src)
    _save(root / "rgbs_colorNormalized" / "slide_7.png", _rgb(64, 64))
    with pytest.raises(InputError, match="slide_7.png: not a BCSS file name"):
        open_source(root, SourceConfig(dataset="bcss", tile_size=32))


# --- GlaS -------------------------------------------------------------------------------------


def _glas_root(tmp_path: Path) -> Path:
    root = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    for stem, seed in (("train_1", 1), ("train_10", 2), ("train_2", 3), ("testA_3", 4), ("testB_1", 5)):
        _save(root / f"{stem}.bmp", _rgb(40, 48, seed))
        anno = np.zeros((40, 48), np.uint8)
        anno[2:12, 3:20] = 1
        anno[20:38, 25:40] = seed + 1  # instance ids need not be consecutive
        _save(root / f"{stem}_anno.bmp", anno)
    (root / "Grade.csv").write_text("name,grade\n")
    return root


def test_glas_splits_binary_labels_and_instances(tmp_path):
    src = open_source(_glas_root(tmp_path), SourceConfig(dataset="glas", tile_size=32))
    assert src.class_names == ("background", "gland") and src.has_instances
    slides = list(dict.fromkeys(r.slide_id for r in src.records))
    assert slides == ["train_1", "train_2", "train_10", "testA_3", "testB_1"]
    assert {r.slide_id: r.split for r in src.records} == {"train_1": "train", "train_2": "train",
                                                          "train_10": "train", "testA_3": "test",
                                                          "testB_1": "test"}
    assert len(src) == 5 * 4  # 48 x 40 -> x in (0, 16), y in (0, 8)
    i = next(k for k, r in enumerate(src.records) if r.tile_id == "testA_3_16_8")
    s = src.load(i)
    anno = np.asarray(Image.open(src.entries[3].mask))
    np.testing.assert_array_equal(s.instances, anno[8:40, 16:48].astype(np.int32))
    np.testing.assert_array_equal(s.labels, (anno[8:40, 16:48] > 0).astype(np.uint8))
    assert s.instances.dtype == np.int32 and set(np.unique(s.instances)) == {0, 1, 5}
    assert set(np.unique(s.labels)) == {0, 1}


def test_glas_image_without_annotation_is_refused(tmp_path):
    root = _glas_root(tmp_path)
    (root / "testB_1_anno.bmp").unlink()
    with pytest.raises(InputError, match=r"testB_1.bmp: no annotation testB_1_anno.bmp"):
        open_source(root, SourceConfig(dataset="glas", tile_size=32))


# --- whole-slide images -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slide_source():
    pytest.importorskip("tiffslide")
    return open_source(SLIDE, SourceConfig(tile_size=64))


def test_slide_grid_keeps_tissue_not_glass(slide_source):
    src = slide_source
    assert src.kind == "slide" and src.native_mpp == pytest.approx(0.499)
    # 0.499 is within 2 % of the 0.5 target: tiles are native pixels, 64 apart at level 0; the last row and
    # column are shifted back to end at the slide's border (2220 x 2967), where the tissue reaches it
    assert all(r.mpp == pytest.approx(0.499) for r in src.records)
    assert {r.x % 64 for r in src.records if r.x != 2220 - 64} == {0} and {r.y % 64 for r in src.records if r.y != 2967 - 64} == {0}
    assert any(r.y == 2967 - 64 for r in src.records)
    kept = {(r.x, r.y) for r in src.records}
    assert 0.2 < len(kept) / (34 * 46) < 0.6  # the tissue is a band in the middle of the slide
    assert (1088, 1984) in kept  # well inside the tissue
    assert not any(x < 512 and y < 768 for x, y in kept)  # glass at the top left
    assert all(r.tile_id == f"cmu_small_region_{r.x}_{r.y}" and r.slide_id == "cmu_small_region"
               for r in src.records)
    tile = src.load([(r.x, r.y) for r in src.records].index((1088, 1984)))
    assert tile.rgb.shape == (3, 64, 64) and tile.rgb.dtype == np.uint8 and tile.labels is None
    sat = np.asarray(Image.fromarray(tile.rgb.transpose(1, 2, 0)).convert("HSV"))[..., 1]
    assert sat.mean() > 40  # stained tissue, not white glass


def test_slide_tile_matches_level0_pixels(slide_source):
    import tiffslide

    r = slide_source.records[len(slide_source) // 2]
    region = tiffslide.TiffSlide(SLIDE).read_region((r.x, r.y), 0, (64, 64)).convert("RGB")
    np.testing.assert_array_equal(slide_source.load(len(slide_source) // 2).rgb,
                                  np.asarray(region).transpose(2, 0, 1))


def test_slide_at_coarser_mpp_reads_a_larger_footprint(tmp_path):
    pytest.importorskip("tiffslide")
    src = open_source(SLIDE, SourceConfig(tile_size=32, target_mpp=1.0))
    assert all(r.mpp == pytest.approx(1.0) for r in src.records)
    steps = sorted({r.x for r in src.records})
    assert np.diff(steps).min() in (64, 65)  # 32 px at 1.0 um/px = 64.1 level-0 px at 0.499
    assert src.load(0).rgb.shape == (3, 32, 32)


def _pyramid(path: Path, img: np.ndarray, mpp: float = 0.5) -> Path:
    import tifffile

    opts = dict(photometric="rgb", tile=(128, 128), compression="zlib", resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, subifds=2, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for k in (2, 4):
            tif.write(img[::k, ::k], subfiletype=1, resolution=(1e4 / mpp / k, 1e4 / mpp / k), **opts)
    return path


def test_pyramidal_slide_reads_a_lower_level_and_records_level0(tmp_path):
    pytest.importorskip("tiffslide")
    img = np.full((512, 512, 3), 240, np.uint8)
    img[128:384, 256:512] = (180, 60, 150)  # a pink "tissue" block
    path = _pyramid(tmp_path / "pink.tif", img)
    src = open_source(path, SourceConfig(tile_size=32, target_mpp=2.0))  # 4x coarser: level 2
    assert sorted((r.x, r.y) for r in src.records) == [(x, y) for x in (256, 384) for y in (128, 256)]
    for i in range(len(src)):
        s = src.load(i).rgb
        assert s.shape == (3, 32, 32)
        np.testing.assert_allclose(s.reshape(3, -1).mean(1), (180, 60, 150), atol=2)


def test_blank_slide_is_refused_naming_the_file(tmp_path):
    pytest.importorskip("tiffslide")
    rng = np.random.default_rng(0)
    img = (242 + rng.integers(-3, 4, (512, 512, 3))).astype(np.uint8)  # glass with sensor noise
    path = _pyramid(tmp_path / "blank.tif", img)
    with pytest.raises(InputError, match=r"blank\.tif: no tile has 50% tissue"):
        open_source(path, SourceConfig(tile_size=64))


def test_slide_without_resolution_needs_mpp(tmp_path):
    pytest.importorskip("tiffslide")
    import tifffile

    img = np.zeros((256, 256, 3), np.uint8)
    img[64:192, 64:192] = (180, 60, 150)
    path = tmp_path / "nores.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(128, 128))
    with pytest.raises(InputError, match=r"nores\.tif: the slide does not record its resolution"):
        open_source(path, SourceConfig(tile_size=32))
    assert len(open_source(path, SourceConfig(tile_size=32, mpp=0.5))) > 0


def test_not_a_slide_is_refused_naming_the_file(tmp_path):
    pytest.importorskip("tiffslide")
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(InputError, match=r"broken\.svs: cannot open as a slide"):
        open_source(path)


# --- bad input: each an InputError naming the file ----------------------------------------------


def _truncated(path: Path) -> None:
    _save(path, _rgb(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG but not really" * 20)


def _empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _gray(path: Path) -> None:
    _save(path, _rgb(64, 64)[..., 0])


def _rgb16(path: Path) -> None:
    import tifffile

    tifffile.imwrite(path, _rgb(64, 64).astype(np.uint16) * 257, photometric="rgb")


def _small(path: Path) -> None:
    _save(path, _rgb(20, 64))


@pytest.mark.parametrize("name, make, message", [
    ("bad.png", _truncated, "cannot decode image"),
    ("bad.png", _corrupt, "not a readable image"),
    ("bad.png", _empty, "empty file"),
    ("bad.png", _gray, "grayscale image"),
    ("bad.tif", _rgb16, "more than 8 bits per channel"),
    ("bad.png", _small, "smaller than one 32-px tile"),
])
def test_bad_image_is_refused_naming_it(tmp_path, name, make, message):
    root = _folder(tmp_path / "ds", {"good": _rgb(32, 32)}, classes=None)
    make(root / "images" / name)
    # some problems show in the header (when the source is built), others when the tile is decoded
    with pytest.raises(InputError, match=rf"images/{name}: .*{message}"):
        _load_all(open_source(root, SourceConfig(tile_size=32)))


def test_rgba_is_accepted_with_alpha_dropped(tmp_path):
    a = _rgb(32, 32, 7)
    rgba = np.dstack([a, np.full((32, 32), 128, np.uint8)])
    _save(tmp_path / "rgba.png", rgba)
    src = open_source(tmp_path / "rgba.png", SourceConfig(tile_size=32))
    with pytest.warns(UserWarning, match="rgba.png: dropping the alpha channel"):
        s = src.load(0)
    np.testing.assert_array_equal(s.rgb, a.transpose(2, 0, 1))  # colours kept as they are, not composited


def test_palette_image_is_expanded_to_rgb(tmp_path):
    a = np.zeros((32, 32, 3), np.uint8)
    a[:, 16:] = (200, 30, 90)
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no alpha: no warning
        s = open_source(tmp_path / "p.png", SourceConfig(tile_size=32)).load(0)
    np.testing.assert_array_equal(s.rgb, a.transpose(2, 0, 1))


def test_mask_with_labels_outside_the_classes(tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[5, 5], m[6, 6] = 3, 254
    root = _folder(tmp_path / "ds", {"a": _rgb(32, 32)}, {"a": m})  # classes 0..2
    src = open_source(root, SourceConfig(tile_size=32))
    with pytest.raises(InputError, match=r"masks/a.png: mask values \[3, 254\] are outside the declared classes 0..2"):
        src.load(0)


def test_mask_size_differs_from_its_image(tmp_path):
    root = _folder(tmp_path / "ds", {"a": _rgb(32, 32)}, {"a": np.zeros((32, 40), np.uint8)})
    with pytest.raises(InputError, match=r"masks/a.png: mask is \(40, 32\) px, its image a.png is \(32, 32\)"):
        open_source(root, SourceConfig(tile_size=32))


def test_image_without_its_mask(tmp_path):
    root = _folder(tmp_path / "ds", {"a": _rgb(32, 32), "b": _rgb(32, 32)}, {"a": np.zeros((32, 32), np.uint8)})
    with pytest.raises(InputError, match=r"images/b.png: no mask with stem 'b'"):
        open_source(root, SourceConfig(tile_size=32))


def test_colour_mask_and_masks_without_classes(tmp_path):
    root = _folder(tmp_path / "ds", {"a": _rgb(32, 32)}, {"a": _rgb(32, 32)})
    with pytest.raises(InputError, match=r"masks/a.png: mask mode RGB"):
        open_source(root, SourceConfig(tile_size=32))
    root = _folder(tmp_path / "nc", {"a": _rgb(32, 32)}, {"a": np.zeros((32, 32), np.uint8)}, classes=None)
    with pytest.raises(InputError, match="no class names: add a classes.txt"):
        open_source(root, SourceConfig(tile_size=32))


def test_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="nowhere: source not found"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="empty/images: no images"):
        open_source(tmp_path / "empty")


# --- sources pickle (DataLoader workers) --------------------------------------------------------


def _pickle_kinds(tmp_path: Path):
    folder = _folder(tmp_path / "ds", {"a": _rgb(64, 64)}, {"a": np.ones((64, 64), np.uint8)})
    yield open_source(folder, SourceConfig(tile_size=32))
    yield open_source(_bcss_root(tmp_path), SourceConfig(dataset="bcss", tile_size=32))
    yield open_source(_glas_root(tmp_path), SourceConfig(dataset="glas", tile_size=32))
    if pytest.importorskip("tiffslide"):
        slide = open_source(SLIDE, SourceConfig(tile_size=64))
        slide.load(0)  # an open slide handle must not travel with the pickle
        yield slide


def test_each_source_kind_pickles(tmp_path):
    kinds = []
    for src in _pickle_kinds(tmp_path):
        copy = pickle.loads(pickle.dumps(src))
        assert repr(copy.records) == repr(src.records) and copy.class_names == src.class_names
        for i in (0, len(src) - 1):
            a, b = src.load(i), copy.load(i)
            np.testing.assert_array_equal(a.rgb, b.rgb)
            for name in ("labels", "instances"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None and y is None) or np.array_equal(x, y)
        kinds.append(src.kind)
    assert kinds == ["folder", "bcss", "glas", "slide"]
