"""`--overwrite` replaces only what the same command wrote before: a user's file survives every command.

Each command is pointed at a folder (or, for `store pack`, a zip) holding a
file the project did not write, with `--overwrite`: it exits 1 with one
`error:` line naming the folder, and the file is still there, byte for byte.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import synth
from pathsegdiff.cli import app
from pathsegdiff.store import create_store

TILES = Path(__file__).parents[1] / "data" / "he_tiles"
runner = CliRunner()
THESIS = b"four years of work\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A small labelled store with train/val/test tiles."""
    path = tmp_path_factory.mktemp("src") / "src.zarr"
    with create_store(path, synth.schema(), synth.records()) as w:
        w.write(range(synth.N_TILES), synth.tile_batch(range(synth.N_TILES)))
    return path


@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    r = runner.invoke(app, ["train", str(store), "-o", str(run), "--head", "linear", "--epochs", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    return run


def _users_folder(tmp_path: Path, name: str = "mydir") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(THESIS)
    return folder


def _refused(argv: list[str], folder: Path) -> None:
    r = runner.invoke(app, argv)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (argv, r.output)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(folder) in errors[0], r.output
    assert "Traceback" not in r.output


def test_predict_overwrite_keeps_a_users_folder(tmp_path, run_dir):
    out = _users_folder(tmp_path)
    _refused(["predict", str(TILES / "images" / sorted((TILES / "images").iterdir())[0].name), "--head", str(run_dir),
              "-o", str(out), "--overwrite"], out)
    assert (out / "thesis.docx").read_bytes() == THESIS


def test_predict_overwrite_keeps_a_users_file_inside_its_own_output(tmp_path):
    from pathsegdiff.output_dir import MARKER
    from pathsegdiff.predict.run import PREDICT_OUTPUT, check_output_dir, replace_output_dir

    out = replace_output_dir(tmp_path / "pred", PREDICT_OUTPUT, overwrite=False)
    assert (out / MARKER).is_file()
    (out / "prediction.json").write_text("{}")
    check_output_dir(out, PREDICT_OUTPUT, overwrite=True)  # its own output: replaceable
    (out / "notes.txt").write_bytes(THESIS)
    with pytest.raises(FileExistsError, match="notes.txt"):
        check_output_dir(out, PREDICT_OUTPUT, overwrite=True)
    assert (out / "notes.txt").read_bytes() == THESIS


def test_demo_overwrite_keeps_a_users_folder(tmp_path):
    out = _users_folder(tmp_path)
    _refused(["demo", "-o", str(out), "--overwrite"], out)
    assert (out / "thesis.docx").read_bytes() == THESIS


def test_train_overwrite_keeps_a_users_folder_and_a_file_put_into_a_run(tmp_path, store, run_dir):
    out = _users_folder(tmp_path)
    _refused(["train", str(store), "-o", str(out), "--head", "linear", "--epochs", "1", "--quiet", "--overwrite"], out)
    assert (out / "thesis.docx").read_bytes() == THESIS
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "thesis.docx").write_bytes(THESIS)
    _refused(["train", str(store), "-o", str(run), "--head", "linear", "--epochs", "1", "--quiet", "--overwrite"], run)
    assert (run / "thesis.docx").read_bytes() == THESIS


def test_evaluate_keeps_a_users_folder(tmp_path, run_dir):
    out = _users_folder(tmp_path)
    _refused(["evaluate", str(run_dir), "-o", str(out), "--quiet"], out)
    assert (out / "thesis.docx").read_bytes() == THESIS


def test_extract_overwrite_keeps_a_users_folder_and_a_file_put_into_a_store(tmp_path, store):
    out = _users_folder(tmp_path)
    argv = [str(TILES), "--tile-size", "64", "--limit", "2", "--quiet", "--overwrite"]
    _refused(["extract", *argv[:1], "-o", str(out), *argv[1:]], out)
    assert (out / "thesis.docx").read_bytes() == THESIS
    import shutil

    st = tmp_path / "st.zarr"
    shutil.copytree(store, st)
    (st / "thesis.docx").write_bytes(THESIS)
    _refused(["extract", *argv[:1], "-o", str(st), *argv[1:]], st)
    assert (st / "thesis.docx").read_bytes() == THESIS


def test_store_compact_and_copy_overwrite_keep_a_users_file(tmp_path, store):
    import shutil

    out = _users_folder(tmp_path)
    _refused(["store", "compact", str(store), "-o", str(out), "--compact", "int8", "--overwrite"], out)
    _refused(["store", "copy", str(store), str(out), "--overwrite"], out)
    assert (out / "thesis.docx").read_bytes() == THESIS
    st = tmp_path / "st.zarr"
    shutil.copytree(store, st)
    (st / "thesis.docx").write_bytes(THESIS)
    _refused(["store", "compact", str(store), "-o", str(st), "--compact", "int8", "--overwrite"], st)
    _refused(["store", "copy", str(store), str(st), "--overwrite"], st)
    assert (st / "thesis.docx").read_bytes() == THESIS


def test_store_pack_overwrite_replaces_only_a_packed_store(tmp_path, store):
    theirs = tmp_path / "theirs.zip"
    with zipfile.ZipFile(theirs, "w") as zf:
        zf.writestr("thesis.docx", THESIS)
    before = theirs.read_bytes()
    _refused(["store", "pack", str(store), str(theirs), "--overwrite"], theirs)
    assert theirs.read_bytes() == before
    ours = tmp_path / "ours.zip"
    assert runner.invoke(app, ["store", "pack", str(store), str(ours)]).exit_code == 0
    r = runner.invoke(app, ["store", "pack", str(store), str(ours), "--overwrite"])
    assert r.exit_code == 0, r.output  # a packed store is the command's own output


def test_a_killed_writes_temporary_is_the_stores_own_not_a_users_file():
    from pathsegdiff.store.schema import foreign_entries

    names = ["zarr.json", "tiles", "zarr.194978c49daf462da4e6ccc9a5f712f5.partial", "thesis.docx"]
    assert foreign_entries(names) == ["thesis.docx"]
