"""The package's import graph: no loops, imports only run downward, modules stay small.

Every ``import`` and ``from ... import`` of a ``pathsegdiff`` module counts,
also those inside functions (a loop hidden in a function is still a loop).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pathsegdiff"

# Who may import whom, by top-level part: a part imports only parts to its right in this order.
LAYERS = ["cli", "demo", "doctor", "cluster", "predict", "sweep", "train_head", "extract", "tiles", "store",
          "output_dir", "colours", "errors", "__init__"]
NEVER = {("train_head", "extract"), ("extract", "train_head"), ("tiles", "extract"), ("store", "tiles")}
MAX_LINES = 300
LONGER = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_package_init(module: str) -> bool:
    return (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").is_file()


def test_no_import_loops():
    graph = import_graph()
    # a package's __init__ re-exports its modules; the modules importing one another through it is no loop
    graph = {m: {t for t in e if not (_is_package_init(t) and m.startswith(t + "."))} for m, e in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_run_downward():
    wrong = []
    for module, targets in import_graph().items():
        src = _part(module)
        for target in targets:
            dst = _part(target)
            if src == dst:
                continue
            if (src, dst) in NEVER or LAYERS.index(dst) < LAYERS.index(src):
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_modules_are_small():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONGER), {k: v for k, v in long.items() if k not in LONGER}


# Inside store/, by role (docs/architecture.md): the contract (schema, identity, encodings/) at the ground, the
# backend (where a store lives and how its bytes move: location, root, lock, chunk_io, codecs, zarr_compat, ...)
# above it, the core (create, writer, reader, views, grow, ...) above that, and one module per `store` command
# (commands/: info, ls, verify, copy, pack, compact) at the top.  A layer imports only the layers below it.
STORE_LAYERS = ["commands", "core", "backend", "contract"]
CONTRACT = ("pathsegdiff.store.schema", "pathsegdiff.store.records", "pathsegdiff.store.identity", "pathsegdiff.store.encodings")


def _store_layer(module: str) -> str:
    if module.startswith(CONTRACT):
        return "contract"
    part = module.split(".")[2]
    return part if part in ("commands", "backend") else "core"


def test_store_sublayers_run_downward():
    wrong = []
    for module, targets in import_graph().items():
        if not module.startswith("pathsegdiff.store."):
            continue
        for target in targets:  # pathsegdiff.store itself only re-exports; a module importing it names a submodule
            if target.startswith("pathsegdiff.store.") and \
                    STORE_LAYERS.index(_store_layer(target)) < STORE_LAYERS.index(_store_layer(module)):
                wrong.append(f"{module} ({_store_layer(module)}) imports {target} ({_store_layer(target)})")
    assert not wrong, wrong


def test_the_store_knows_nothing_of_its_users():
    wrong = [f"{m} imports {t}" for m, ts in import_graph().items() if m.startswith("pathsegdiff.store")
             for t in ts if _part(t) in ("extract", "train_head", "predict", "tiles", "cli", "demo", "doctor")]
    assert not wrong, wrong


def test_store_sublayers_are_where_the_test_expects():
    """The sub-packages exist (a move that renames them must update STORE_LAYERS)."""
    for package in ("commands", "backend", "encodings"):
        assert (PACKAGE / "store" / package / "__init__.py").is_file(), package


# bench/ (scripts run as ``python bench/NAME.py``, importing each other by file name) and the tests' helpers
# package (``helpers``) keep the package's rules: no import loop, small modules.  Test modules share code only
# through ``helpers`` and conftest fixtures: no test module imports another, none edits the import path, and every
# module under tests/ that is not a test, a conftest or a data generator (tests/data/) lives in tests/helpers/.
ROOT = PACKAGE.parent
BENCH = ROOT / "bench"
TESTS = ROOT / "tests"
BENCH_LONGER = {
    "store_io.py": "one benchmark, four contestants timed in rotation; 38 of its lines are the docstring defining them",
}


def folder_graph(folder: Path, prefix: str = "") -> dict[str, set[str]]:
    """Imports among the modules of ``folder``, named ``prefix`` + file stem (also those inside functions)."""
    modules = {prefix + p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_bench_has_no_import_loops():
    graph = folder_graph(BENCH)
    assert graph["host_rate"] and graph["extract"], "the graph sees bench's imports of its own modules"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_bench_scripts_are_small():
    long = {p.name: n for p in BENCH.glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(BENCH_LONGER), {k: v for k, v in long.items() if k not in BENCH_LONGER}


def test_test_helpers_have_no_import_loops():
    graph = folder_graph(TESTS / "helpers", "helpers.")
    assert graph["helpers.kill_points"], "the graph sees the helpers' imports of one another"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _test_code() -> list[Path]:
    return [p for p in TESTS.rglob("*.py") if "data" not in p.relative_to(TESTS).parts[:1]]


def test_test_modules_share_code_only_through_helpers():
    wrong = []
    for path in _test_code():
        where = path.relative_to(ROOT)
        if not (path.name.startswith("test_") or path.name == "conftest.py" or "helpers" in where.parts):
            wrong.append(f"{where}: not a test or a conftest; shared code goes in tests/helpers/")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                wrong.append(f"{where}:{node.lineno}: edits the import path (pyproject's pythonpath finds helpers)")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            wrong += [f"{where}:{node.lineno}: imports {n}" for n in names if n.split(".")[-1].startswith(
                ("test_", "conftest"))]
    assert not wrong, wrong


def test_the_folder_graph_sees_imports_inside_functions(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n")
    assert find_cycle(folder_graph(tmp_path)) == ["a", "b", "a"]
