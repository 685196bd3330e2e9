"""A head module from its config: a built-in's class from the registry, a plug-in's from its recorded code."""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

from pathsegdiff.errors import ConfigError
from pathsegdiff.train_head.heads.config import HeadConfig
from pathsegdiff.train_head.heads.plugins import HeadCode, instantiate, rebuild_class, resolve
from pathsegdiff.train_head.heads.registry import BUILTIN, describe_kinds, is_class_path


def head_class(kind: str | type) -> tuple[type, HeadCode | None]:
    """The class ``--head`` names and, for a plug-in, the record that rebuilds it (its file's SHA-256).

    A class object (a notebook's ``head=MyHead``) counts as the plug-in of its module's file.
    """
    if isinstance(kind, type):
        kind = class_path_of(kind)
    if not is_class_path(kind):
        if kind not in BUILTIN:
            raise ConfigError(f"unknown head {kind!r}; choose one of {describe_kinds()}")
        return BUILTIN[kind], None
    return resolve(kind)


def class_path_of(cls: type) -> str:
    """``/abs/file.py:Class`` for a class defined in a file; refused for one defined in a notebook cell."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or cls.__module__ == "__main__" or not str(file).endswith(".py"):
        raise ConfigError(f"{cls.__qualname__} is defined in {cls.__module__} and not in a .py file, so a run "
                          "could not be rebuilt from it; write it to a file (a notebook can %%writefile heads.py) "
                          "and pass 'heads.py:" + cls.__qualname__ + "'")
    return f"{Path(file).resolve()}:{cls.__qualname__}"


def build_head(config: HeadConfig, cls: type | None = None) -> nn.Module:
    """The module ``config`` describes, with fresh weights; ``cls``: a plug-in's class (from :func:`head_class`
    or :func:`load_class`)."""
    if config.builtin:
        return BUILTIN[config.kind](config)
    if cls is None:
        raise ConfigError(f"head {config.kind}: a plug-in head is built from its class (load_head rebuilds it from "
                          "the recorded code)")
    return instantiate(cls, config.spec, dict(config.args))


def load_class(config: HeadConfig, code: HeadCode | None, head_code: str | None = None,
               run_dir: Path | None = None) -> type | None:
    """The class of a saved head: None for a built-in, else the plug-in's, rebuilt from checked code."""
    if config.builtin:
        return None
    if code is None:
        raise ConfigError(f"the checkpoint names plug-in head {config.kind} but records no code hash; "
                          "it cannot be rebuilt safely")
    return rebuild_class(code, head_code, run_dir)
