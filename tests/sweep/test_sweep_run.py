"""A whole sweep on a small store: the table against the cells' results, resume, --jobs, the folder rules."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from pathsegdiff.cli import app
from pathsegdiff.errors import ConfigError, StoreExistsError
from pathsegdiff.sweep import SweepConfig, run_sweep
from pathsegdiff.train_head.fit import TrainConfig

runner = CliRunner()
# 2 heads x 2 block sets x 1 timestep set x 1 label fraction (a tile count), 2 runs of 1 epoch
CONFIG = SweepConfig(heads=("fcn", "linear"), block_sets=(("up1",), ("up1", "up2")), timestep_sets=((50,),),
                     label_fractions=(6,), train=TrainConfig(epochs=1, runs=2, batch_size=4))
N_CELLS = 4


def _files(out):
    """Every file a cell wrote, with its bytes and modification time."""
    return {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted((out / "cells").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def swept(sweep_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "one_job"
    lines = []
    result = run_sweep(sweep_store, out, CONFIG, jobs=1, threads=1, progress=False, echo=lines.append)
    return out, result, lines


def test_every_cell_is_a_run_directory_and_the_table_is_their_results(swept):
    out, result, lines = swept
    assert result.trained == N_CELLS and result.skipped == 0 and len(result.rows) == N_CELLS
    assert result.pids == (os.getpid(),)
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_dir"] for r in rows] == [f"cells/{c.name}" for c in CONFIG.cells()]
    markdown = (out / "sweep.md").read_text()
    for row in rows:
        r = json.loads((out / row["run_dir"] / "results.json").read_text())
        assert (out / row["run_dir"] / "run.json").is_file() and len(r["per_run"]) == 2
        assert row["blocks"] == "+".join(r["blocks"]) and row["timesteps"] == "50"
        assert int(row["n_train_tiles"]) == r["n_train_tiles"] and row["head"] == r["head"]
        for m in ("miou", "mdice", "pixel_accuracy", "boundary_f1"):
            assert float(row[m]) == r[m] and float(row[f"{m}_sd"]) == r["std"][m], m
        assert f"{r['miou']:.4f} ± {r['std']['miou']:.4f}" in markdown
    assert {int(r["n_train_tiles"]) for r in rows} == {6} and {r["label_fraction"] for r in rows} == {"6 tiles"}
    best = max(rows, key=lambda r: float(r["miou"]))
    assert markdown.count("**") == 2 and f"**{float(best['miou']):.4f} ±" in markdown
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{N_CELLS} cells x 2 runs ({N_CELLS} trained, 0 finished earlier)" in result.line()
    assert [ln.split(":")[0] for ln in lines[1:]] == [f"  {c.label()}" for c in CONFIG.cells()]  # a line per cell
    assert lines[0] == f"sweep: {N_CELLS} cells x 2 runs; training {N_CELLS} in 1 process of 1 torch thread"


def test_evaluate_reads_a_cell(swept):
    out, _, _ = swept
    cell = out / "cells" / CONFIG.cells()[0].name
    r = runner.invoke(app, ["evaluate", str(cell), "--split", "val", "--quiet", "-o", str(out.parent / "eval")])
    assert r.exit_code == 0, r.output
    assert "val split (8 tiles)" in r.output


def test_jobs_2_gives_the_same_results_as_jobs_1(swept, sweep_store):
    out, _, _ = swept
    other = out.parent / "two_jobs"
    result = run_sweep(sweep_store, other, CONFIG, jobs=2, threads=1, progress=False)
    assert result.trained == N_CELLS and os.getpid() not in result.pids and 1 <= len(result.pids) <= 2  # workers
    assert (other / "sweep.csv").read_bytes() == (out / "sweep.csv").read_bytes()
    mine, theirs = _files(out), _files(other)
    assert mine.keys() == theirs.keys()
    weights = [k for k in mine if k.endswith(".safetensors")]
    assert len(weights) == 2 * N_CELLS and all(mine[k][0] == theirs[k][0] for k in weights)


def test_a_rerun_skips_every_finished_cell(swept, sweep_store):
    out, _, _ = swept
    before = _files(out)
    r = runner.invoke(app, ["sweep", sweep_store, "-o", str(out), "--heads", "fcn,linear", "--blocks", "up1,up1+up2",
                            "--timesteps", "50", "--label-fraction", "6", "--runs", "2", "--epochs", "1",
                            "--batch-size", "4", "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"{N_CELLS} finished cells skipped; nothing to train" in r.output
    assert f"(0 trained, {N_CELLS} finished earlier)" in r.output
    assert _files(out) == before  # no cell file was written again


def test_a_sweep_recorded_before_an_option_existed_resumes(swept, sweep_store, tmp_path):
    out, _, _ = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    record = json.loads((copy / "sweep.json").read_text())
    del record["train"]["allow_partial"]  # as an older version wrote it: the option reads as its default
    (copy / "sweep.json").write_text(json.dumps(record))
    assert run_sweep(sweep_store, copy, CONFIG, threads=1, progress=False).skipped == N_CELLS
    record["train"]["no_such_option"] = 1  # one this version does not know is another sweep
    (copy / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"other options \(.*no_such_option\)"):
        run_sweep(sweep_store, copy, CONFIG, threads=1, progress=False)


def test_an_interrupted_cell_is_trained_again_and_only_it(swept, sweep_store):
    out, _, _ = swept
    cell = out / "cells" / CONFIG.cells()[1].name
    meta = json.loads((cell / "run.json").read_text())
    (cell / "run.json").write_text(json.dumps({**meta, "status": "running"}))  # as a killed train leaves it
    shutil.rmtree(out / "cells" / CONFIG.cells()[2].name)  # a cell never started
    before = _files(out)
    result = run_sweep(sweep_store, out, CONFIG, jobs=1, threads=1, progress=False)
    assert (result.trained, result.skipped) == (2, N_CELLS - 2)
    after = _files(out)
    changed = {k.split("/")[1] for k in after if before.get(k) != after[k]}
    assert changed == {CONFIG.cells()[1].name, CONFIG.cells()[2].name}
    assert json.loads((cell / "run.json").read_text())["status"] == "done"


def test_other_options_are_refused_unless_overwrite(swept, sweep_store, tmp_path):
    out, _, _ = swept
    other = SweepConfig(heads=("linear",), train=TrainConfig(epochs=2, runs=2))
    with pytest.raises(ConfigError, match="other options .*block_sets.*epochs.*--overwrite"):
        run_sweep(sweep_store, out, other, threads=1, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = run_sweep(sweep_store, copy, SweepConfig(heads=("linear",), label_fractions=(1.0,),
                                                      train=TrainConfig(epochs=1, runs=1)),
                       threads=1, progress=False, overwrite=True)
    assert result.trained == 1 and [p.name for p in (copy / "cells").iterdir()] == ["linear__all__t-all__100pct"]
    assert result.rows[0]["n_train_tiles"] == 24 and result.rows[0]["miou_sd"] is None  # one run: no sd


@pytest.mark.parametrize("where", ["top", "cells"])
def test_a_folder_with_foreign_files_is_refused_even_with_overwrite(swept, sweep_store, tmp_path, where):
    out, _, _ = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    mine = copy / ("notes.txt" if where == "top" else "cells/my_run/notes.txt")
    mine.parent.mkdir(exist_ok=True)
    mine.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(StoreExistsError, match="notes.txt" if where == "top" else "no cell of the sweep there"):
            run_sweep(sweep_store, copy, CONFIG, threads=1, progress=False, overwrite=overwrite)
    assert mine.read_text() == "mine"


def test_a_folder_another_command_wrote_is_refused(sweep_store, tmp_path):
    out = tmp_path / "run"
    (out / "runs").mkdir(parents=True)
    (out / "run.json").write_text("{}")
    r = runner.invoke(app, ["sweep", sweep_store, "-o", str(out), "--overwrite", "--epochs", "1", "--quiet"])
    assert r.exit_code == 1 and "did not write (run.json" in r.output, r.output
    assert (out / "run.json").read_text() == "{}"
