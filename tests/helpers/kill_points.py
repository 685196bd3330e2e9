"""Seeded SIGKILL points for ``pathsegdiff extract``, and the check that a resume gives the uninterrupted store.

Used by tests/faults/test_kill_extract.py (CI, a few points) and bench/soak.py (many).  A
:class:`KillHarness` holds a subset of the real H&E tiles (12 tiles of 64 px),
the store of an uninterrupted run (the reference), a fork server
(kill_extract_child.py) and its census: how often each kill site is reached
in a whole run.  :func:`plan` turns a seed into one kill point: a phase (the
seed modulo the phases, so consecutive seeds cover all of them), a site of
that phase, which call of it, before or after the call, and whether a plain
run has already filled part of the store (so that the killed run is itself a
resume).  :meth:`KillHarness.run` kills a child there, checks what it left
(the lock is stale, a created store verifies), resumes with the ordinary CLI
in this process and compares every object with the reference.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from typer.testing import CliRunner

from helpers import children
from helpers.he_tiles import TILES
from helpers.stores import store_bytes
from pathsegdiff.cli import app
from pathsegdiff.errors import NotAStoreError
from pathsegdiff.store import open_store
from pathsegdiff.store.backend.location import parse_location
from pathsegdiff.store.backend.lock import StoreLock
from pathsegdiff.store.reader import read_root_attrs
from pathsegdiff.store.schema import LOCK_NAME
from pathsegdiff.store.commands.verify import verify_store

IMAGES = 3  # of the six 128x96 crops: 12 tiles of 64 px
ARGS = ["--tile-size", "64", "--quiet"]
KILL_BATCH, RESUME_BATCH = 3, 5  # features do not depend on the batch size; the resume uses another one
PREFILL = 4  # tiles a plain run writes before the killed run, for about half the points
PHASES = ("load", "create", "batch", "write", "finalise")


@dataclass(frozen=True)
class KillPoint:
    seed: int
    phase: str
    site: str
    n: int  # the n-th call of the site
    when: str  # before or after that call
    prefill: int  # tiles already written when the killed run starts

    def __str__(self) -> str:
        pre = f", {self.prefill} tiles prefilled" if self.prefill else ""
        return f"seed {self.seed}: {self.phase}: {self.site} call {self.n} ({self.when}){pre}"


def plan(seed: int, census: dict[int, dict[str, int]]) -> KillPoint:
    """The kill point of ``seed``, drawn from the sites the census saw reached."""
    rng = random.Random(seed)
    phase = PHASES[seed % len(PHASES)]
    prefill = 0 if phase == "create" else rng.choice((0, PREFILL))  # a resumed store has nothing to create
    c = census[prefill]
    both = ("before", "after")
    sites = {  # phase -> (site, first call, last call, moments)
        "load": [("load.module", 1, c.get("load.module", 0), ("before",)),
                 ("load.seed", 1, c.get("load.seed", 0), ("before",))],
        "create": [("create.set", 1, c.get("create.set", 0), both)],
        "batch": [("batch.forward", 1, c.get("batch.forward", 0), ("before",))],
        "write": [("write.chunk", 1, c.get("write.chunk", 0), both),
                  ("write.partial", 1, c.get("write.partial", 0), ("before",)),
                  ("write.status", 1, c.get("write.status", 0) - 1, both)],  # all but the final flush
        "finalise": [("write.status", c.get("write.status", 0), c.get("write.status", 0), both),
                     ("lock.release", 1, c.get("lock.release", 0), both),
                     ("returned", 1, c.get("returned", 0), ("before",))],
    }[phase]
    site, first, last, moments = rng.choice([s for s in sites if s[2] >= max(s[1], 1)])
    return KillPoint(seed, phase, site, rng.randint(first, last), rng.choice(moments), prefill)


@dataclass
class Outcome:
    point: KillPoint
    returncode: int
    left: str = ""  # what the kill left: no store, an interrupted creation, or tiles written and the lock
    written: int = 0  # tiles the interrupted store says are written
    problems: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    @property
    def matched(self) -> bool:
        return self.killed and not self.problems

    def line(self) -> str:
        verdict = "matched" if self.matched else "FAILED: " + "; ".join(self.problems)
        return f"{self.point} -> exit {self.returncode}, left {self.left}; {verdict}"


def comparable(root: Path) -> dict[str, bytes]:
    """Every object of a store; the root document without provenance (it records the command line)."""
    out = store_bytes(root)
    doc = json.loads(out["zarr.json"])
    doc["attributes"]["pathsegdiff"].pop("provenance")
    out["zarr.json"] = json.dumps(doc, sort_keys=True).encode()
    return out


def differences(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    extra, gone = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    return ([f"extra objects {extra[:4]}"] if extra else []) + ([f"missing objects {gone[:4]}"] if gone else []) \
        + ([f"objects differ {changed[:4]}"] if changed else [])


class KillHarness:
    """The tiles, the reference store, the fork server and its census, under ``workdir``."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.src = self.workdir / "tiles"
        for sub in ("images", "masks"):
            (self.src / sub).mkdir(parents=True, exist_ok=True)
            for p in sorted((TILES / sub).glob("*.png"))[:IMAGES]:
                shutil.copy(p, self.src / sub / p.name)
        shutil.copy(TILES / "classes.txt", self.src / "classes.txt")
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the children: CPU features differ in their last bits across counts
        self.server = subprocess.Popen(children.command("kill_extract_child"), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=children.TESTS, env=children.env())
        try:
            self.reference = self.workdir / "reference.zarr"
            code, output = self.extract(self.reference, KILL_BATCH)
            if code:
                raise RuntimeError(f"the reference run failed: {output}")
            self.census = {p: self._census(p) for p in (0, PREFILL)}
        except BaseException:
            self.close()
            raise

    def extract(self, out: Path, batch: int, *extra: str) -> tuple[int, str]:
        """The ordinary CLI, in this process."""
        r = CliRunner().invoke(app, ["extract", str(self.src), "-o", str(out), *ARGS, "--batch-size", str(batch),
                                     *extra])
        return r.exit_code, r.output

    def _argv(self, out: Path, *extra: str) -> list[str]:
        return ["extract", str(self.src), "-o", str(out), *ARGS, "--batch-size", str(KILL_BATCH), *extra]

    def _child(self, out: Path, prefill: int, **req) -> int:
        req.update(argv=self._argv(out), store=str(out), log=str(out) + ".log",
                   prefill=self._argv(out, "--limit", str(prefill)) if prefill else None)
        self.server.stdin.write(json.dumps(req) + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the kill server died (exit code {self.server.poll()})")
        return json.loads(answer)["returncode"]

    def _census(self, prefill: int) -> dict[str, int]:
        out = self.workdir / f"census-{prefill}.zarr"
        counts = self.workdir / f"census-{prefill}.json"
        code = self._child(out, prefill, site=None, counts=str(counts))
        if code or differences(comparable(out), comparable(self.reference)):
            raise RuntimeError(f"the census run (prefill {prefill}, exit {code}) does not give the reference store; "
                               f"see {out}.log")
        return json.loads(counts.read_text())

    def run(self, point: KillPoint, keep: bool = True) -> Outcome:
        """Kill a child at ``point``, check what it left, resume in this process, compare with the reference."""
        out = self.workdir / f"kill-{point.seed}.zarr"
        outcome = Outcome(point, self._child(out, point.prefill, site=point.site, n=point.n, when=point.when))
        if not outcome.killed:
            outcome.problems.append(f"the child was not killed; see {out}.log")
            return outcome
        outcome.left, outcome.written, outcome.problems = _after_kill(out)
        code, output = self.extract(out, RESUME_BATCH)
        if code:
            outcome.problems.append(f"the resume failed (exit {code}): {output.strip()[-300:]}")
        else:
            outcome.problems += _resumed(out, self.reference, output, outcome.written)
        if outcome.matched and not keep:
            shutil.rmtree(out, ignore_errors=True)
        return outcome

    def close(self) -> None:
        if self.server.stdin and not self.server.stdin.closed:
            self.server.stdin.close()
        self.server.wait(timeout=60)
        torch.set_num_threads(self._threads)


def _after_kill(out: Path) -> tuple[str, int, list[str]]:
    """What the killed run left, its written tiles, and what is wrong (a live-looking lock, a store not verifying)."""
    problems = []
    lock = StoreLock(out)
    owner = lock.read_owner()
    if owner is not None and not lock.is_stale(owner):
        problems.append(f"the dead writer's lock is not recognised as stale: {owner}")
    try:
        complete = bool(read_root_attrs(parse_location(out)).get("complete"))
    except (FileNotFoundError, NotAStoreError):
        return ("no store" + (" but a lock" if owner is not None else "")), 0, problems
    if not complete:
        return "an interrupted creation", 0, problems
    report = verify_store(out)
    if not report.ok:
        problems.append(f"the interrupted store does not verify: {report.lines()[:3]}")
    written = len(open_store(out).written())
    return f"{written} tiles and {'the' if owner is not None else 'no'} lock", written, problems


def _resumed(out: Path, reference: Path, output: str, written_before: int) -> list[str]:
    problems = []
    if f" {written_before} already written" not in output:  # the resume kept what the status says is written
        problems.append(f"the resume did not keep the {written_before} written tiles: {output.strip()[-200:]}")
    report = verify_store(out)
    if not report.ok:
        problems.append(f"the resumed store does not verify: {report.lines()[:3]}")
    if [p.name for p in out.glob(LOCK_NAME + "*")]:
        problems.append(f"lock files left: {[p.name for p in out.glob(LOCK_NAME + '*')]}")
    return problems + differences(comparable(out), comparable(reference))
