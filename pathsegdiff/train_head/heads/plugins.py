"""Plug-in heads by class path: found, hashed, imported; rebuilt later only from the same code.

``--head path/to/heads.py:Class`` names a class in one self-contained Python
file (it may import installed packages, not its sibling files);
``--head package.module:Class`` one in an importable module.  Training
records a :class:`HeadCode`: the class path (a file's made absolute), the
file and its SHA-256.  ``evaluate`` and ``predict`` import the recorded file
only while it still has that hash; otherwise they ask for the code with
``--head-code PATH`` and refuse a file of another hash.  A file's bytes are
read once, hashed and executed from those bytes, so what ran is what was
hashed.  Code is never imported from inside a run directory: a run someone
sends you cannot make ``evaluate`` execute a file it ships.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from pathsegdiff.errors import ConfigError

_MODULES: dict[tuple[str, str], types.ModuleType] = {}  # (file, sha256) -> the module executed from it


@dataclass(frozen=True)
class HeadCode:
    """Where a plug-in head's class comes from, as the run records it."""

    class_path: str  # "/abs/path/heads.py:Class" or "package.module:Class"
    file: str  # the absolute path of the file that defines the class
    sha256: str  # of that file's bytes

    @property
    def class_name(self) -> str:
        return self.class_path.rpartition(":")[2]

    @property
    def module(self) -> str | None:
        """The module name of a ``package.module:Class`` path; None for a file."""
        left = self.class_path.rpartition(":")[0]
        return None if _is_file(left) else left

    def to_dict(self) -> dict[str, str]:
        return {"class_path": self.class_path, "file": self.file, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadCode:
        try:
            return cls(str(d["class_path"]), str(d["file"]), str(d["sha256"]))
        except (KeyError, TypeError):
            raise ConfigError(f"the run's head code record is incomplete: {d!r}") from None


def _is_file(left: str) -> bool:
    return left.endswith(".py") or "/" in left or "\\" in left


def _split(class_path: str) -> tuple[str, str]:
    left, _, name = class_path.rpartition(":")
    if not left or not name.isidentifier():
        raise ConfigError(f"head {class_path!r}: give path/to/heads.py:ClassName or package.module:ClassName")
    return left, name


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read it: {e.strerror or e}") from None


def _exec_file(path: Path, data: bytes) -> types.ModuleType:
    """Execute ``data`` (the bytes of ``path``) as a fresh module, once per (file, hash)."""
    digest = sha256_of(data)
    key = (str(path), digest)
    if key not in _MODULES:
        name = f"pathsegdiff_head_{digest[:16]}"
        module = types.ModuleType(name)
        module.__file__ = str(path)
        sys.modules[name] = module  # dataclasses and pickling look a class's module up here
        try:
            exec(compile(data, str(path), "exec"), module.__dict__)
        except Exception as e:  # the plug-in's own error, named in one line
            del sys.modules[name]
            raise ConfigError(f"{path}: importing the head code failed: {type(e).__name__}: {e}") from None
        _MODULES[key] = module
    return _MODULES[key]


def _class_in(module: types.ModuleType, name: str, where: str) -> type:
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"{where} has no {name} (its nn.Module classes: {', '.join(found) or 'none'})")
    if not isinstance(cls, type):
        raise ConfigError(f"{where}:{name} is a {type(cls).__name__}, not a class")
    return cls


def _module_file(module: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"head module {module}: cannot be found: {e}") from None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ConfigError(f"head module {module}: no such Python module on the import path")
    return Path(spec.origin).resolve()


def _import_module(module: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except Exception as e:  # the plug-in's own error, named in one line
        raise ConfigError(f"head module {module}: importing it failed: {type(e).__name__}: {e}") from None


def resolve(class_path: str) -> tuple[type, HeadCode]:
    """The class ``class_path`` names, imported now, and the record that rebuilds it later (training)."""
    left, name = _split(class_path)
    if _is_file(left):
        path = Path(left).expanduser().resolve()
        data = _read(path, "head code")
        return _class_in(_exec_file(path, data), name, str(path)), HeadCode(f"{path}:{name}", str(path),
                                                                            sha256_of(data))
    path = _module_file(left)
    digest = sha256_of(_read(path, f"head module {left}:"))
    return _class_in(_import_module(left), name, left), HeadCode(f"{left}:{name}", str(path), digest)


def _inside(path: Path, directory: Path | None) -> bool:
    return directory is not None and path.is_relative_to(directory.resolve())


def rebuild_class(code: HeadCode, head_code: str | None = None, run_dir: Path | None = None) -> type:
    """The recorded class, from the recorded file while it has the recorded hash, else from ``head_code``.

    ``head_code`` (``--head-code PATH``) must hold exactly the recorded bytes.
    """
    ask = (f"pass --head-code PATH: a copy of the code the run was trained with "
           f"(SHA-256 {code.sha256[:16]}...)")
    if head_code is not None:
        path = Path(head_code).expanduser().resolve()
        data = _read(path, "--head-code")
        if sha256_of(data) != code.sha256:
            raise ConfigError(f"--head-code {path}: its SHA-256 {sha256_of(data)[:16]}... differs from the "
                              f"{code.sha256[:16]}... the run recorded for {code.class_path}; refusing other code")
        return _class_in(_exec_file(path, data), code.class_name, str(path))
    path = Path(code.file)
    if not path.is_absolute() or _inside(path.resolve(), run_dir):
        raise ConfigError(f"the run names head code {code.file} inside the run or by a relative path; code is never "
                          f"imported from a run's contents: {ask}")
    if not path.is_file():
        raise ConfigError(f"the head's code {path} is gone; {ask}")
    data = _read(path, "head code")
    if sha256_of(data) != code.sha256:
        raise ConfigError(f"the head's code {path} has changed since training (SHA-256 now "
                          f"{sha256_of(data)[:16]}..., recorded {code.sha256[:16]}...); {ask}")
    if code.module is None:
        return _class_in(_exec_file(path, data), code.class_name, str(path))
    if _module_file(code.module) != path.resolve():
        raise ConfigError(f"head module {code.module} now comes from {_module_file(code.module)}, not the recorded "
                          f"{path}; {ask}")
    return _class_in(_import_module(code.module), code.class_name, code.module)


def instantiate(cls: type, spec: Any, args: dict[str, Any]) -> nn.Module:
    """``cls(spec, **args)``, refused in one line unless it builds an ``nn.Module``."""
    try:
        head = cls(spec, **args)
    except Exception as e:  # the plug-in's constructor: its error in one line, with the call
        raise ConfigError(f"{cls.__qualname__}(spec, **{args!r}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(head, nn.Module):
        raise ConfigError(f"{cls.__qualname__}(spec, **{args!r}) built a {type(head).__qualname__}, not a "
                          "torch.nn.Module")
    return head
