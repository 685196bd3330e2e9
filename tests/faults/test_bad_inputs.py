"""The bad-input corpus (tests/data/make_bad_inputs.py) through every CLI verb that takes such a file.

Each refused input must give exactly one ``error:`` line naming the file, exit
code 1, no traceback (the command's own handler caught it), and leave an
existing store byte-for-byte unchanged.  Inputs the corpus marks ``accept``
(palette, CMYK, opaque RGBA images) must work.  The tests loop over the
corpus and report every failing (input, verb) pair at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import synth
from helpers.heads import store_head, tiny_model_head
from helpers.stores import store_bytes
from pathsegdiff.cli import app
from pathsegdiff.errors import InputError, ModelLoadError
from pathsegdiff.store import create_store, open_store

runner = CliRunner()

# Verbs that take these inputs but are not run through the corpus here yet (none left).
PENDING_VERBS: list[str] = []
EXTRACT = ["--tile-size", "64", "--timesteps", "50", "--batch-size", "4", "--quiet"]  # 4 tiles per 128 px image


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(synth.N_TILES), synth.tile_batch(range(synth.N_TILES)))
    return path


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    return tiny_model_head(tmp_path_factory.mktemp("head"))


def cli(*args) -> tuple[int, str, BaseException | None]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output, r.exception


def clean_error(result, *needles) -> str | None:
    """None when ``result`` is one clean error line holding every needle; else what is wrong."""
    code, out, exc = result
    if exc is not None and not isinstance(exc, SystemExit):
        return f"uncaught {type(exc).__name__}: {exc}"
    if code != 1:
        return f"exit code {code}: {out[-300:]}"
    if "Traceback" in out:
        return "traceback printed"
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    if len(lines) != 1:
        return f"{len(lines)} error lines: {out[-300:]}"
    if out.rstrip().splitlines()[-1] != lines[0]:  # the message itself runs over several lines
        return f"error message of several lines: {out[out.index('error:'):][:300]!r}"
    missing = [n for n in needles if str(n) not in lines[0]]
    return f"error line lacks {missing}: {lines[0]}" if missing else None


def count(verbs: str, inputs: int, runs: int) -> None:
    """One line for the issue's closing note (``pytest -rP`` shows it): runs that all gave the clean error."""
    print(f"COUNT {verbs}: {inputs} bad inputs, {runs} runs, {runs} clean one-line errors")


def of_kind(corpus, kind: str, expect: str = "refuse") -> list[Path]:
    root, manifest = corpus
    return [root / k for k, v in manifest.items() if v["kind"] == kind and v["expect"] == expect]


def test_corpus_covers_what_the_issue_lists(corpus):
    root, manifest = corpus
    names = set(manifest)
    for ext in ("png", "jpg", "tif"):
        assert {f"images/truncated.{ext}", f"images/empty.{ext}"} <= names
    assert {"images/bomb.png", "images/rgb16.png", "images/palette.png", "images/cmyk.jpg"} <= names
    assert {"folders/mask_out_of_range", "folders/mask_wrong_size"} <= names
    assert {"models/yaml_not_a_model_config", "models/ckpt_not_a_checkpoint", "models/malicious_os_system"} <= names
    assert (root / "images" / "bomb.png").stat().st_size < 200  # a bomb by its header, not its bytes
    assert not list(root.glob("MARKER-*"))


def test_predict_on_every_image(corpus, tiny_head, store, tmp_path):
    before = store_bytes(store)
    problems, refused = [], 0
    for k, image in enumerate(of_kind(corpus, "image")):
        for extra in ([], ["--store", store]):  # from the model, and with features from an existing store
            got = clean_error(cli("predict", image, "--head", tiny_head, "-o", tmp_path / f"o{k}", *extra), image)
            if got:
                problems.append(f"predict {image.name} {extra}: {got}")
            else:
                refused += 1
    for k, image in enumerate(of_kind(corpus, "image", "accept")):
        code, out, exc = cli("predict", image, "--head", tiny_head, "-o", tmp_path / f"ok{k}")
        if code != 0 or not (tmp_path / f"ok{k}" / "mask.png").is_file():
            problems.append(f"predict {image.name} should work: {code} {exc!r} {out[-300:]}")
    assert not problems, "\n".join(problems)
    assert refused == 2 * len(of_kind(corpus, "image"))
    count("predict (from the model, and --store)", len(of_kind(corpus, "image")), refused)
    assert store_bytes(store) == before


def test_store_verbs_on_things_that_are_not_stores(corpus, store, tmp_path):
    before = store_bytes(store)
    root, _ = corpus
    not_stores = of_kind(corpus, "store_like") + [
        root / "images" / "truncated.png", root / "images" / "empty.png", root / "models" / "ckpt_empty",
        root / "models" / "ckpt_empty" / "checkpoints" / "last.ckpt", tmp_path / "does-not-exist.zarr",
    ]
    problems, n = [], 0
    for k, bad in enumerate(not_stores):
        verbs = [("store", "info", bad), ("store", "verify", bad), ("store", "verify", bad, "--manifest"),
                 ("store", "ls", bad), ("store", "pack", bad, tmp_path / f"p{k}.zip"),
                 ("store", "copy", bad, tmp_path / f"c{k}.zarr"),
                 ("store", "copy", bad, store, "--overwrite"),  # a bad source must not clobber a good store
                 ("train", bad, "-o", tmp_path / f"run{k}", "--epochs", "1"),
                 ("evaluate", bad, "--store", store)]
        for args in verbs:
            n += 1
            got = clean_error(cli(*args), bad)
            if got:
                problems.append(f"{' '.join(map(str, args[:2]))} {bad.name}: {got}")
    assert not problems, "\n".join(problems)
    assert n == 9 * len(not_stores)
    count("store info/verify/verify --manifest/ls/pack/copy x2, train, evaluate", len(not_stores), n)
    assert store_bytes(store) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("p", "c", "run"))]


def test_good_store_into_bad_destinations(corpus, store, tmp_path):
    """copy, pack, train and evaluate refuse to write over what is not theirs, and leave it as it was."""
    root, _ = corpus
    photos = root / "not_stores" / "photos"
    photo_bytes = (photos / "a.png").read_bytes()
    before = store_bytes(store)
    head = store_head(tmp_path / "head", store)
    cases = [
        (("store", "copy", store, photos, "--overwrite"), photos),
        (("store", "copy", store, root / "images" / "palette.png"), "palette.png"),
        (("store", "copy", store, store / "inner.zarr"), "inside"),
        (("store", "copy", store, Path(str(store) + "/."), "--overwrite"), "source store"),
        (("store", "pack", store, root / "images" / "palette.png"), "palette.png"),
        (("store", "pack", store, store / "s.zip"), "inside"),
        (("train", store, "-o", photos, "--overwrite", "--epochs", "1"), photos),
        (("train", store, "-o", store, "--overwrite", "--epochs", "1"), store),
        (("train", store, "-o", root / "images" / "palette.png", "--epochs", "1"), "palette.png"),
        (("evaluate", head, "--store", store, "-o", store), store),
        (("evaluate", head, "--store", store, "-o", photos), photos),
    ]
    problems = []
    for args, needle in cases:
        got = clean_error(cli(*args), needle)
        if got:
            problems.append(f"{' '.join(map(str, args))}: {got}")
    assert not problems, "\n".join(problems)
    count("store copy/pack, train, evaluate into bad destinations", len({c[1] for c in cases}), len(cases))
    assert store_bytes(store) == before
    assert (photos / "a.png").read_bytes() == photo_bytes and sorted(p.name for p in photos.iterdir()) == ["a.png"]


def test_evaluate_and_predict_with_bad_run_directories(corpus, store, tmp_path):
    root, _ = corpus
    good = store_head(tmp_path / "good", store)
    runs = {"missing": tmp_path / "no-such-run", "empty": tmp_path / "empty", "photos": root / "not_stores" / "photos"}
    runs["empty"].mkdir()
    for name, damage in {"json_garbage": lambda d: (d / "head.json").write_bytes(b"\x89PNG\x00{{"),
                         "json_list": lambda d: (d / "head.json").write_text("[1, 2, 3]"),
                         "weights_garbage": lambda d: (d / "head.safetensors").write_bytes(b"\x08\x00" * 40),
                         "weights_missing": lambda d: (d / "head.safetensors").unlink(),
                         "run_json_names_nothing": lambda d: ((d / "head.json").unlink(),
                                                              (d / "run.json").write_text('{"best_run": "runs/x"}'))
                         }.items():
        d = tmp_path / name
        shutil.copytree(good, d)
        damage(d)
        runs[name] = d
    before = store_bytes(store)
    problems = []
    image = root / "images" / "palette.png"
    for name, run in runs.items():
        for args in (("evaluate", run, "--store", store),
                     ("predict", image, "--head", run, "-o", tmp_path / f"o-{name}")):
            got = clean_error(cli(*args), run)
            if got:
                problems.append(f"{args[0]} with run {name}: {got}")
    assert not problems, "\n".join(problems)
    count("evaluate, predict with bad run directories", len(runs), 2 * len(runs))
    assert store_bytes(store) == before


def test_model_directories_refused_by_the_loader_and_by_predict(corpus, tiny_head, tmp_path):
    from pathsegdiff.extract.backbones import load_backbone

    root, manifest = corpus
    image = root / "images" / "palette.png"
    problems = []
    for model_dir in of_kind(corpus, "model_dir"):
        try:
            load_backbone(str(model_dir))
            problems.append(f"load_model {model_dir.name}: loaded")
        except ModelLoadError as e:
            if str(model_dir) not in str(e) or "\n" in str(e).strip():
                problems.append(f"load_model {model_dir.name}: message {e}")
        except Exception as e:  # noqa: BLE001 - any other exception is the failure this test looks for
            problems.append(f"load_model {model_dir.name}: {type(e).__name__}: {e}")
        got = clean_error(cli("predict", image, "--head", tiny_head, "--model", model_dir,
                              "-o", tmp_path / model_dir.name), model_dir)
        if got:
            problems.append(f"predict --model {model_dir.name}: {got}")
    assert not problems, "\n".join(problems)
    n_models = len(of_kind(corpus, "model_dir"))
    count("load_model (library), predict --model", n_models, 2 * n_models)
    assert not list(root.glob("MARKER-*")), "a malicious checkpoint ran code"


def two_image_folder(where: Path, corpus, image_b: Path | None = None, mask_b: Path | None = None) -> Path:
    """Like the corpus's mask folders (classes.txt, images/, masks/), with a good image a and an image b.

    b's image and mask are good ones unless ``image_b`` / ``mask_b`` replace them.
    """
    root, _ = corpus
    good = root / "not_stores" / "photos" / "a.png"
    (where / "images").mkdir(parents=True)
    (where / "masks").mkdir()
    shutil.copy(root / "folders" / "mask_wrong_size" / "classes.txt", where / "classes.txt")
    mask = Image.fromarray((np.arange(128 * 128).reshape(128, 128) % 3).astype(np.uint8))
    for stem, image, mask_file in (("a", good, None), ("b", image_b or good, mask_b)):
        shutil.copy(image, where / "images" / f"{stem}{image.suffix}")
        if mask_file:
            shutil.copy(mask_file, where / "masks" / f"{stem}.png")
        else:
            mask.save(where / "masks" / f"{stem}.png")
    return where


@pytest.fixture(scope="module")
def extract_store(corpus, tmp_path_factory):
    """A store that ``extract`` filled in part from a good two-image folder: image a's 4 tiles, not b's.

    Resuming it from a folder whose image b (or its mask) was since replaced by a bad
    file reaches that file with the store open: the store must stay as it was.
    """
    tmp = tmp_path_factory.mktemp("extract")
    good = two_image_folder(tmp / "good", corpus)
    path = tmp / "s.zarr"
    code, out, exc = cli("extract", good, "-o", path, *EXTRACT, "--limit", "4")
    assert code == 0, (out, exc)
    assert list(open_store(path).written()) == [0, 1, 2, 3]
    return good, path


def test_extract_on_every_bad_input(corpus, extract_store, tmp_path):
    """Every bad image and mask folder through ``extract`` into a new store and into a store it resumes,
    every bad model directory into that store, and every store-like thing as the destination."""
    root, _ = corpus
    good, store = extract_store
    before = store_bytes(store)
    not_stores = {p.relative_to(root): p.read_bytes() for p in sorted((root / "not_stores").rglob("*")) if p.is_file()}
    problems, n = [], 0

    def refused(args: tuple, needle) -> None:
        nonlocal n
        n += 1
        got = clean_error(cli("extract", *args, *EXTRACT), needle)
        if not got and store in args and store_bytes(store) != before:
            got = "the existing store changed"
        if got:
            problems.append(f"extract {' '.join(str(a).replace(str(root), '') for a in args)}: {got}")

    for k, image in enumerate(of_kind(corpus, "image")):
        refused((image, "-o", tmp_path / f"new-image{k}.zarr"), image)
        damaged = two_image_folder(tmp_path / f"image{k}", corpus, image_b=image)  # b was good when a was written
        refused((damaged, "-o", store), damaged / "images" / f"b{image.suffix}")
    for k, folder in enumerate(of_kind(corpus, "mask_folder")):
        refused((folder, "-o", tmp_path / f"new-masks{k}.zarr"), folder / "masks" / "a.png")
        damaged = two_image_folder(tmp_path / f"masks{k}", corpus, mask_b=folder / "masks" / "a.png")
        refused((damaged, "-o", store), damaged / "masks" / "b.png")
    for model_dir in of_kind(corpus, "model_dir"):
        refused((good, "--model", model_dir, "-o", store), model_dir)
    for dest in of_kind(corpus, "store_like"):
        if dest.name != "empty_dir":  # an empty directory is a fine place for a new store
            for extra in ((), ("--overwrite",)):
                refused((good, "-o", dest, *extra), dest)
    for k, image in enumerate(of_kind(corpus, "image", "accept")):
        code, out, exc = cli("extract", image, "-o", tmp_path / f"ok{k}.zarr", *EXTRACT)
        if code != 0 or len(open_store(tmp_path / f"ok{k}.zarr").written()) != 4:
            problems.append(f"extract {image.name} should work: {code} {exc!r} {out[-300:]}")
    assert not problems, "\n".join(problems)
    n_images, n_masks, n_models = (len(of_kind(corpus, k)) for k in ("image", "mask_folder", "model_dir"))
    assert n == 2 * (n_images + n_masks) + n_models + 2 * (len(of_kind(corpus, "store_like")) - 1)
    count("extract (new store, resumed store) on images", n_images, 2 * n_images)
    count("extract (new store, resumed store) on mask folders", n_masks, 2 * n_masks)
    count("extract --model into a resumed store", n_models, n_models)
    count("extract -o (with and without --overwrite) into things that are not stores",
          len(of_kind(corpus, "store_like")) - 1, 2 * (len(of_kind(corpus, "store_like")) - 1))
    for new in tmp_path.glob("new-*.zarr"):  # a refused input may leave a new store, but never a written tile
        assert not len(open_store(new).written()), new
    assert {p.relative_to(root): p.read_bytes() for p in sorted((root / "not_stores").rglob("*"))
            if p.is_file()} == not_stores
    assert not list(root.glob("MARKER-*")), "a malicious checkpoint ran code"


def test_bad_masks_are_refused_by_the_mask_reader(corpus):
    """The library calls the folder source makes on masks, with the file named."""
    from pathsegdiff.tiles.images import check_labels, read_mask

    root, _ = corpus
    mask = read_mask(root / "folders" / "mask_out_of_range" / "masks" / "a.png")
    with pytest.raises(InputError, match=r"a\.png: mask values \[7\] are outside the declared classes 0\.\.2"):
        check_labels(mask, 3, 255, root / "folders" / "mask_out_of_range" / "masks" / "a.png")
    with pytest.raises(InputError, match=r"mask_in_colour/masks/a\.png: mask mode RGB"):
        read_mask(root / "folders" / "mask_in_colour" / "masks" / "a.png")
