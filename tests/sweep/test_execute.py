"""Running cells in worker processes: results reported as each cell finishes, errors raised, threads per job."""

from __future__ import annotations

import os

import pytest

from helpers.sweep_work import FLAG, fail_on, wait_for_first
from pathsegdiff.errors import ConfigError, InputError
from pathsegdiff.sweep.execute import CellJob, run_cells, threads_per_job, usable_cores
from pathsegdiff.train_head.fit import TrainConfig


def _jobs(tmp_path, *names):
    return [CellJob(n, ("store",), str(tmp_path), TrainConfig()) for n in names]


def test_each_cell_is_reported_as_it_finishes_not_when_all_have(tmp_path):
    heard = []

    def done(summary):
        heard.append(summary)
        if summary["name"] == "first":
            (tmp_path / FLAG).write_text("")  # what 'second' waits for, in its worker

    run_cells(_jobs(tmp_path, "first", "second"), 2, 1, done, work=wait_for_first)
    assert [s["name"] for s in heard] == ["first", "second"]
    assert heard[1]["saw"], "the parent heard of 'first' only after 'second' had finished"
    assert os.getpid() not in {s["pid"] for s in heard}


def test_a_failing_cell_stops_the_sweep_with_its_own_error(tmp_path):
    heard = []
    with pytest.raises(InputError, match="cell bad refused"):
        run_cells(_jobs(tmp_path, "good", "bad", "never"), 1, 1, heard.append, work=fail_on)
    assert [s["name"] for s in heard] == ["good"]


def test_threads_per_job():
    assert threads_per_job(1) == usable_cores() and threads_per_job(3, 5) == 5
    assert threads_per_job(usable_cores() + 1) == 1  # never zero
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        threads_per_job(0)
    with pytest.raises(ConfigError, match="--threads must be >= 1"):
        threads_per_job(1, 0)
