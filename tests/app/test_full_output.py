"""Read-only and full output folders: one line naming the folder, before the long work, nothing left behind.

The folders are real mounts made by the test (a read-only tmpfs, a tmpfs of a
few hundred KiB), so a free-space check sees what a user's full disk shows; a
test skips where this machine does not allow mounting.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.heads import tiny_model_head
from pathsegdiff.cli import app

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()


@contextmanager
def tmpfs(path: Path, size: str = "512k", read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _one_line(argv: list[str], folder: Path) -> str:
    r = runner.invoke(app, argv)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (argv, r.output)
    assert "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(folder) in errors[0], r.output
    return errors[0]


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    return tiny_model_head(tmp_path_factory.mktemp("head"))


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "crop.png"
    Image.open(DATA / "target_image.png").convert("RGB").crop((0, 0, 256, 256)).save(path)
    return path


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "full"])
def test_predict_refuses_before_the_model_runs_and_leaves_nothing(tmp_path, head_run, image, read_only):
    with tmpfs(tmp_path / "mnt", read_only=read_only) as mnt:
        out = mnt / "pred"
        line = _one_line(["predict", str(image), "--head", str(head_run), "-o", str(out)], out)
        assert ("read-only" in line or "cannot write" in line) if read_only else "free" in line
        assert not out.exists()


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "full"])
def test_demo_refuses_before_it_starts(tmp_path, read_only):
    with tmpfs(tmp_path / "mnt", read_only=read_only) as mnt:
        out = mnt / "demo"
        _one_line(["demo", "-o", str(out)], out)
        assert not out.exists()


def test_extract_refuses_a_store_larger_than_the_free_disk(tmp_path):
    with tmpfs(tmp_path / "mnt", size="256k") as mnt:
        out = mnt / "s.zarr"
        line = _one_line(["extract", str(DATA / "he_tiles"), "-o", str(out), "--tile-size", "64", "--quiet"], out)
        assert "--limit" in line and "GiB free" in line


def test_a_full_disk_under_the_mapped_mask_is_an_error_not_a_bus_error(tmp_path):
    """The mask file's blocks are reserved before it is mapped: ENOSPC, never SIGBUS, and no mask.u8 left."""
    with tmpfs(tmp_path / "mnt", size="256k") as mnt:
        code = ("import sys; from pathlib import Path; from pathsegdiff.predict.outputs import MaskCanvas\n"
                "try:\n    MaskCanvas(2000, 2000, Path(sys.argv[1]))\n"
                "except OSError as e:\n    print(e.errno); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(mnt)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, (r.returncode, r.stderr)  # -7 would be SIGBUS
        assert not (mnt / "mask.u8").exists()


def test_pack_and_compact_on_a_full_disk_say_they_start_over(tmp_path):
    from helpers import synth

    from pathsegdiff.store import create_store

    src = tmp_path / "src.zarr"
    with create_store(src, synth.schema(), synth.records()) as w:
        w.write(range(synth.N_TILES), synth.tile_batch(range(synth.N_TILES)))
    with tmpfs(tmp_path / "mnt", size="64k") as mnt:
        for argv in (["store", "pack", str(src), str(mnt / "s.zip")],
                     ["store", "compact", str(src), "-o", str(mnt / "c.zarr"), "--compact", "int8"]):
            r = runner.invoke(app, argv)
            assert r.exit_code == 1 and "Traceback" not in r.output, (argv, r.output)
            line = next(ln for ln in r.output.splitlines() if ln.startswith("error:"))
            assert "starts over" in line and "resume" not in line, line
        assert not any(mnt.iterdir())  # nothing half-written left


def test_a_pca_preset_no_narrower_than_the_blocks_is_refused(tmp_path):
    from helpers import synth

    from pathsegdiff.store import create_store

    src = tmp_path / "src.zarr"
    with create_store(src, synth.schema(), synth.records()) as w:
        w.write(range(synth.N_TILES), synth.tile_batch(range(synth.N_TILES)))
    r = runner.invoke(app, ["store", "compact", str(src), "-o", str(tmp_path / "c.zarr"), "--compact", "pca999"])
    assert r.exit_code == 1 and "compress nothing" in r.output, r.output
    assert not (tmp_path / "c.zarr").exists()
    r = runner.invoke(app, ["extract", str(DATA / "he_tiles"), "-o", str(tmp_path / "e.zarr"), "--tile-size", "64",
                            "--compact", "pca999", "--quiet"])
    assert r.exit_code == 1 and "compress nothing" in r.output, r.output
    r = runner.invoke(app, ["extract", str(DATA / "he_tiles"), "-o", str(tmp_path / "k.zarr"), "--tile-size", "64",
                            "--compact", "pca56", "--calibration-tiles", "4", "--limit", "4", "--quiet"])
    assert r.exit_code == 0 and "keep all their channels" in r.output, r.output  # up2 (48) narrower than 56


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """(store, run) of a linear head trained on a small synthetic store."""
    from helpers import synth

    from pathsegdiff.store import create_store

    root = tmp_path_factory.mktemp("trained")
    store = root / "s.zarr"
    with create_store(store, synth.schema(), synth.records()) as w:
        w.write(range(synth.N_TILES), synth.tile_batch(range(synth.N_TILES)))
    r = runner.invoke(app, ["train", str(store), "-o", str(root / "run"), "--head", "linear", "--epochs", "1",
                            "--quiet"])
    assert r.exit_code == 0, r.output
    return store, root / "run"


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "full"])
def test_train_and_evaluate_refuse_before_the_work_and_leave_nothing(tmp_path, labelled_run, read_only):
    store, run = labelled_run
    with tmpfs(tmp_path / "mnt", size="256k", read_only=read_only) as mnt:
        out = mnt / "run"
        _one_line(["train", str(store), "-o", str(out), "--head", "fcn", "--epochs", "1", "--quiet"], out)
        report = mnt / "report"
        _one_line(["evaluate", str(run), "-o", str(report), "--quiet"], report)
        assert not out.exists() and not report.exists()
