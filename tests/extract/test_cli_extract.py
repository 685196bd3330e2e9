"""`pathsegdiff extract` on the bad-input corpus (tests/data/make_bad_inputs.py).

Every refused input: exit code 1, exactly one output line, ``error:`` and the
offending file's name on it, no traceback.  Inputs the corpus marks
``accept`` (palette, CMYK, opaque RGBA) fill a store.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.store import open_store

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()
FAST = ["--tile-size", "64", "--timesteps", "50", "--decode-workers", "0", "--quiet"]


def _extract(source: Path, out: Path, *extra: str):
    r = runner.invoke(app, ["extract", str(source), "-o", str(out), *FAST, *extra])
    return r.exit_code, r.output


def _refused_on_one_line(code: int, output: str, name: str) -> str | None:
    """None if the output has one ``error:`` line naming ``name`` and no traceback; else what is wrong.

    Errors found while decoding come after the run's info lines (model, pre-flight); those may stay.
    """
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    if code != 1:
        return f"exit code {code}"
    if "Traceback" in output:
        return "a traceback"
    if len(errors) != 1:
        return f"{len(errors)} error lines: {output!r}"
    if name not in errors[0]:
        return f"does not name {name}: {errors[0]!r}"
    return None


def _cases(manifest: dict, kind: str, expect: str) -> list[str]:
    return [p for p, info in manifest.items() if info["kind"] == kind and info["expect"] == expect]


def test_each_bad_image_is_refused_on_one_line_naming_it(corpus, tmp_path):
    root, manifest = corpus
    problems = {}
    for rel in _cases(manifest, "image", "refuse"):
        path = root / rel
        code, output = _extract(path, tmp_path / f"{path.name}.zarr")
        problem = _refused_on_one_line(code, output, path.name)
        if problem:
            problems[rel] = problem
    assert not problems, problems


def test_bad_image_inside_a_folder_is_named(corpus, tmp_path):
    """In a folder, a file that fails its header check stops the run before any model work."""
    root, manifest = corpus
    folder = tmp_path / "tiles"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "good.png").write_bytes((root / "images" / "palette.png").read_bytes())
    (folder / "images" / "gray.png").write_bytes((root / "images" / "gray.png").read_bytes())
    code, output = _extract(folder, tmp_path / "s.zarr")
    assert _refused_on_one_line(code, output, "gray.png") is None, output
    assert len(output.strip().splitlines()) == 1  # nothing else ran
    assert not (tmp_path / "s.zarr").exists()


def test_unusual_but_usable_images_are_accepted(corpus, tmp_path):
    root, manifest = corpus
    accepted = _cases(manifest, "image", "accept")
    assert len(accepted) >= 3
    for rel in accepted:
        out = tmp_path / f"{Path(rel).name}.zarr"
        code, output = _extract(root / rel, out)
        assert code == 0, (rel, output)
        store = open_store(out)
        assert len(store.written()) == store.n_tiles == 4  # 128 px image, 64 px tiles


def test_each_bad_mask_folder_is_refused_naming_the_mask(corpus, tmp_path):
    root, manifest = corpus
    problems = {}
    for rel in _cases(manifest, "mask_folder", "refuse"):
        code, output = _extract(root / rel, tmp_path / f"{Path(rel).name}.zarr")
        problem = _refused_on_one_line(code, output, str(Path(rel) / "masks" / "a.png"))
        if problem:
            problems[rel] = problem
    assert not problems, problems


def test_each_bad_model_directory_is_refused_before_a_store_exists(corpus, tmp_path):
    root, manifest = corpus
    problems = {}
    for rel in _cases(manifest, "model_dir", "refuse"):
        out = tmp_path / f"{Path(rel).name}.zarr"
        code, output = _extract(DATA / "he_tiles", out, "--model", str(root / rel))
        problem = _refused_on_one_line(code, output, Path(rel).name)
        if problem or out.exists():
            problems[rel] = problem or "a store was created"
    assert not problems, problems
    assert not list(root.glob("MARKER-*")), "a checkpoint ran code when loaded"


def test_image_without_its_mask_and_mask_labels_outside_the_classes(tmp_path):
    folder = tmp_path / "tiles"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "classes.txt").write_text("background\nnuclei\n")
    src = DATA / "he_tiles"
    for stem in ("histo_x50_y50", "target_image_x0_y0"):
        (folder / "images" / f"{stem}.png").write_bytes((src / "images" / f"{stem}.png").read_bytes())
    (folder / "masks" / "histo_x50_y50.png").write_bytes((src / "masks" / "histo_x50_y50.png").read_bytes())
    code, output = _extract(folder, tmp_path / "a.zarr")
    assert _refused_on_one_line(code, output, "target_image_x0_y0.png") is None, output
    assert "no mask" in output and len(output.strip().splitlines()) == 1

    (folder / "classes.txt").write_text("background\n")  # the nuclei pixels (1) are now outside the classes
    (folder / "masks" / "target_image_x0_y0.png").write_bytes(
        (src / "masks" / "target_image_x0_y0.png").read_bytes())
    code, output = _extract(folder, tmp_path / "b.zarr")
    assert _refused_on_one_line(code, output, "masks/histo_x50_y50.png") is None, output  # the first tile's
    assert "outside the declared classes" in output
