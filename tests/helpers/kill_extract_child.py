"""Child side of the extraction kill tests: ``pathsegdiff extract`` with a SIGKILL armed at one point.

    python -m helpers.kill_extract_child     # a fork server: one JSON request per stdin line, one JSON answer each

Importing torch, diffusers and zarr costs seconds, so this process imports
them once (and runs no torch op, so forking is safe) and forks one child per
request.  The child pins one torch thread, optionally fills part of the store
first with a plain run (``prefill``), then installs the counting wrappers below
and runs the real CLI.  At the ``n``-th call of the armed site it sends itself
SIGKILL: no clean-up, no ``finally``, no atexit, like a crash at 3 a.m.  The
production code has no test hooks; everything here wraps library functions.

Sites (the phase each belongs to is the planner's business, kill_points.py):

- ``load.module``: ``torch.nn.Module.__init__`` while the model loads;
- ``load.seed``: the tiny model's per-tensor weight seeding while it loads;
- ``create.set``: an object write (zarr ``LocalStore.set``) before the first UNet pass (store creation);
- ``batch.forward``: a submodule call inside the UNet forward;
- ``write.chunk``: a data chunk write (features, labels, rgb, ...), killed before or after it
  (zarr's ``LocalStore.set``, or the store's own ``chunk_io.put_file`` for local tile chunks);
- ``write.partial``: a data chunk write killed with half its bytes in its temporary file;
- ``write.status``: a write of the status chunk (the last one is the run's final status flush);
- ``lock.release``: the store lock's release;
- ``returned``: ``run_extraction`` has returned; the CLI has not printed its summary yet.

A request: ``{"argv": [...], "prefill": [...] | null, "store": path, "site": name | null,
"n": int, "when": "before" | "after", "log": path, "counts": path | null}``.  With ``site``
null nothing is killed and ``counts`` receives every site's number of calls
(the census the planner draws ``n`` from).  The answer: ``{"returncode": rc}``,
negative for a signal (-9: killed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

import torch
import zarr.storage._local as zarr_local

import pathsegdiff.extract.backbones.registry as registry
import pathsegdiff.extract.backbones.seeding as seeding
import pathsegdiff.extract.run.job as job
from pathsegdiff.extract.backbones.ldm import LDM
from pathsegdiff.cli import app
from pathsegdiff.store.backend import chunk_io
from pathsegdiff.store.backend.lock import StoreLock


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Sites:
    """Counting wrappers around library functions; the armed one kills at its ``n``-th call."""

    def __init__(self, store: str, site: str | None, n: int, when: str):
        self.store, self.site, self.n, self.when = Path(store).resolve(), site, n, when
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()  # writes are counted from zarr's event loop and I/O threads
        self.loading = self.in_unet = self.computing = False

    def count(self, site: str) -> int:
        """Count a call of ``site``; returns its number."""
        with self.lock:
            self.counts[site] = self.counts.get(site, 0) + 1
            return self.counts[site]

    def armed(self, site: str, number: int, when: str = "before") -> bool:
        return site == self.site and number == self.n and when == self.when

    def hit(self, site: str, number: int | None = None) -> int:
        """Count a call and kill if it is the armed one; with ``number``: the moment after call ``number``."""
        when, number = ("before", self.count(site)) if number is None else ("after", number)
        if self.armed(site, number, when):
            die()
        return number

    def kind_of(self, path: Path) -> str | None:
        """``data``, ``status`` or ``meta`` for an object of the store under test, else None."""
        try:
            rel = Path(path).resolve().relative_to(self.store).as_posix()
        except ValueError:
            return None
        if rel.startswith("tiles/status/c/"):
            return "status"
        if "/c." in rel and not rel.startswith("tiles/"):  # tile arrays' chunk keys: c.<tile>.0...
            return "data"
        return "meta"

    def install(self) -> None:
        self._wrap_load()
        self._wrap_forward()
        self._wrap_writes()
        self._wrap_end()

    def _wrap_load(self) -> None:
        real_load, real_init, real_seed = registry.load_backbone, torch.nn.Module.__init__, seeding.seed_tensor_

        def load_backbone(*a, **kw):
            self.loading = True
            try:
                return real_load(*a, **kw)
            finally:
                self.loading = False

        def module_init(module, *a, **kw):
            if self.loading:
                self.hit("load.module")
            return real_init(module, *a, **kw)

        def seeded(*a, **kw):
            if self.loading:
                self.hit("load.seed")
            return real_seed(*a, **kw)

        replace_everywhere(real_load, load_backbone)
        torch.nn.Module.__init__, seeding.seed_tensor_ = module_init, seeded

    def _wrap_forward(self) -> None:
        real_forward = LDM.forward_blocks

        def forward(ldm, *a, **kw):
            self.computing = self.in_unet = True
            try:
                return real_forward(ldm, *a, **kw)
            finally:
                self.in_unet = False

        def submodule_call(module, args):
            if self.in_unet:
                self.hit("batch.forward")

        LDM.forward_blocks = forward
        torch.nn.modules.module.register_module_forward_pre_hook(submodule_call)

    def _wrap_writes(self) -> None:
        real_set, real_put = zarr_local.LocalStore.set, zarr_local._put

        def site_of(kind: str | None) -> str | None:
            if kind is None:
                return None
            if not self.computing:
                return "create.set"
            return {"data": "write.chunk", "status": "write.status"}.get(kind)

        async def store_set(store, key, value):
            site = site_of(self.kind_of(Path(store.root) / key))
            number = self.hit(site) if site else None
            result = await real_set(store, key, value)
            if site:
                self.hit(site, number)
            return result

        def put(path, value, exclusive=False):  # runs in zarr's I/O thread
            if self.computing and self.kind_of(path) == "data":
                if self.armed("write.partial", self.count("write.partial")):
                    view = memoryview(value.as_buffer_like()).cast("B")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with zarr_local._atomic_write(path, "wb") as f:  # zarr's own temporary file
                        f.write(view[: len(view) // 2])
                        f.flush()
                        die()
            return real_put(path, value, exclusive=exclusive)

        zarr_local.LocalStore.set, zarr_local._put = store_set, put

        # Tile chunks and the status chunk of a local store are written by the store's own chunk_io.put_file
        # (zarr's bytes, zarr's temporary-file-and-rename), from its thread pool: the same sites.
        real_put_file = chunk_io.put_file

        def put_file(path, parts):
            kind = self.kind_of(Path(path)) if self.computing else None
            site = site_of(kind)
            if kind == "data" and self.armed("write.partial", self.count("write.partial")):
                data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(f"{path}.{uuid.uuid4().hex}.partial", "wb") as f:  # the store's own temporary file
                    f.write(data[: len(data) // 2])
                    f.flush()
                    die()
            number = self.hit(site) if site else None
            result = real_put_file(path, parts)
            if site:
                self.hit(site, number)
            return result

        chunk_io.put_file = put_file

    def _wrap_end(self) -> None:
        real_release, real_run = StoreLock.release, job.run_extraction

        def release(lock):
            number = self.hit("lock.release")
            real_release(lock)
            self.hit("lock.release", number)

        def run_extraction(*a, **kw):
            summary = real_run(*a, **kw)
            self.hit("returned")
            return summary

        StoreLock.release = release
        replace_everywhere(real_run, run_extraction)


def replace_everywhere(real, wrapper) -> None:
    """Point every ``pathsegdiff`` module's name for ``real`` at ``wrapper`` (``from x import f`` copies)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("pathsegdiff"):
            for attr, value in list(vars(module).items()):
                if value is real:
                    setattr(module, attr, wrapper)


def cli(argv: list[str]) -> int:
    try:
        rc = app(args=argv, prog_name="pathsegdiff", standalone_mode=False)
    except SystemExit as e:
        rc = e.code
    return int(rc or 0)


def child(req: dict) -> None:
    """The forked child: never returns."""
    rc = 70
    try:
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        torch.set_num_threads(1)  # as the reference run: CPU features differ in their last bits across counts
        rc = cli(req["prefill"]) if req.get("prefill") else 0
        if rc == 0:
            sites = Sites(req["store"], req.get("site"), int(req.get("n", 0)), req.get("when", "before"))
            sites.install()
            rc = cli(req["argv"])
            if req.get("counts"):
                Path(req["counts"]).write_text(json.dumps(sites.counts))
    except BaseException as e:  # noqa: BLE001 - reported through the exit code and the log
        print(f"kill child: {type(e).__name__}: {e}", file=sys.stderr)
        rc = rc or 71
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(req)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
