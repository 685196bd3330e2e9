"""The bad-input corpus (tests/data/make_bad_inputs.py) through every CLI verb that takes such a file.

Each refused input must give exactly one ``error:`` line naming the file, exit
code 1, no traceback (the command's own handler caught it), and leave an
existing store byte-for-byte unchanged.  Inputs the corpus marks ``accept``
(palette, CMYK, opaque RGBA images) must work.  The tests loop over the
corpus and report every failing (input, verb) pair at once.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import synth
from typer.testing import CliRunner

from heads import store_head, tiny_model_head
from pathsegdiff.cli import app
from pathsegdiff.errors import InputError, ModelLoadError
from pathsegdiff.store import create_store
from test_resume import store_bytes

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()

# Verbs that take these inputs but do not exist yet in this suite's reach.  When the
# extract command is covered here, run the images, the mask folders ("folders/...")
# and the model directories through it like the verbs below.
PENDING_VERBS = ["extract"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sys.path.insert(0, str(DATA))
    try:
        from make_bad_inputs import make_bad_inputs
    finally:
        sys.path.remove(str(DATA))
    root = tmp_path_factory.mktemp("bad")
    return root, make_bad_inputs(root)


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
    assert store_bytes(store) == before


def test_model_directories_refused_by_the_loader_and_by_predict(corpus, tiny_head, tmp_path):
    from pathsegdiff.extract.models import load_model

    root, manifest = corpus
    image = root / "images" / "palette.png"
    problems = []
    for model_dir in of_kind(corpus, "model_dir"):
        try:
            load_model(str(model_dir))
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
    assert not list(root.glob("MARKER-*")), "a malicious checkpoint ran code"


def test_bad_masks_are_refused_by_the_mask_reader(corpus):
    """Until the extract verb is covered (PENDING_VERBS), the library calls its sources make on masks."""
    from pathsegdiff.extract.images import check_labels, read_mask

    root, _ = corpus
    mask = read_mask(root / "folders" / "mask_out_of_range" / "masks" / "a.png")
    with pytest.raises(InputError, match=r"a\.png: mask values \[7\] are outside the declared classes 0\.\.2"):
        check_labels(mask, 3, 255, root / "folders" / "mask_out_of_range" / "masks" / "a.png")
    with pytest.raises(InputError, match=r"mask_in_colour/masks/a\.png: mask mode RGB"):
        read_mask(root / "folders" / "mask_in_colour" / "masks" / "a.png")
