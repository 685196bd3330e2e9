"""Soak: SIGKILL ``pathsegdiff extract`` at many seeded points; each resume must give the uninterrupted store.

The long form of tests/faults/test_kill_extract.py, with the same machinery
(tests/helpers/kill_points.py and kill_extract_child.py): seed k kills at a
point of phase k mod 5 (model load, store creation, mid-batch in the UNet
forward, mid-write, finalisation), then resumes with the ordinary CLI and
compares every object with an uninterrupted run.  Prints one line per point,
then how many matched, per phase; exits 1 if any did not (their stores and
logs are kept in the work directory).

    python bench/soak.py [--points 100] [--first-seed 0] [--dir DIR]

About 2 s per point on a 2-core machine, after ~10 s of set-up.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tests' helpers package (a script is run with bench/ on its path, not tests/)

from helpers.kill_points import PHASES, KillHarness, plan  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100, help="kill points (seeds) to run")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=args.dir))
    t0 = time.perf_counter()
    harness = KillHarness(work)
    tried, matched, failed = Counter(), Counter(), []
    try:
        for seed in range(args.first_seed, args.first_seed + args.points):
            outcome = harness.run(plan(seed, harness.census), keep=False)
            tried[outcome.point.phase] += 1
            matched[outcome.point.phase] += outcome.matched
            if not outcome.matched:
                failed.append(outcome)
            print(outcome.line(), flush=True)
    finally:
        harness.close()
    by_phase = ", ".join(f"{p} {matched[p]}/{tried[p]}" for p in PHASES)
    print(f"{sum(matched.values())} of {sum(tried.values())} kill points matched the uninterrupted store "
          f"({by_phase}); {time.perf_counter() - t0:.0f} s")
    if failed:
        print(f"not matched: seeds {[o.point.seed for o in failed]}; stores and logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
