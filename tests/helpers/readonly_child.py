"""Child process for the read-only tests: drops the root-only permission override, then uses a store.

Usage: python -m helpers.readonly_child STORE

Root passes every permission check through CAP_DAC_OVERRIDE; the child drops it
(and CAP_DAC_READ_SEARCH) from its capability sets, so a ``chmod -R a-w`` store
is read-only to it as it is to any user.  Prints one JSON line: per operation,
its result or the error's class and message.
"""

import ctypes
import json
import sys
from pathlib import Path

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_permission_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & keep)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


drop_permission_override()

from typer.testing import CliRunner  # noqa: E402

from helpers import synth  # noqa: E402
from pathsegdiff.cli import app  # noqa: E402
from pathsegdiff.errors import PathsegdiffError  # noqa: E402
from pathsegdiff.store import create_store, open_or_create, open_store, open_writer  # noqa: E402
from pathsegdiff.store.commands.verify import verify_store  # noqa: E402

store = Path(sys.argv[1])
results = {}


def attempt(name, fn):
    try:
        results[name] = {"ok": True, "value": fn()}
    except PathsegdiffError as e:
        results[name] = {"ok": False, "error": type(e).__name__, "message": str(e)}


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    raw = None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)
    return {"code": r.exit_code, "output": r.output, "uncaught": raw}


try:
    open(store / "probe", "w").close()
    results["can_write_anyway"] = True
except PermissionError:
    results["can_write_anyway"] = False
attempt("read", lambda: [open_store(store).written().tolist(),
                         float(open_store(store).read_tile(2).features[50]["up1"].sum())])
attempt("verify", lambda: verify_store(store).ok)
attempt("resume", lambda: open_or_create(store, synth.schema(), synth.records()).close())
attempt("open_writer", lambda: open_writer(store).close())
attempt("create_beside", lambda: create_store(store.parent / "new.zarr", synth.schema(), synth.records()).close())
attempt("overwrite", lambda: create_store(store, synth.schema(), synth.records(), overwrite=True).close())
results["cli_info"] = cli("store", "info", store)
results["cli_verify"] = cli("store", "verify", store)
results["cli_copy_into"] = cli("store", "copy", store, store.parent / "copy.zarr")
print(json.dumps(results))
