"""The ownership rules of the README's architecture section, read from the code itself (ast, no import).

Imports go one way (config <- core <- ingest <- detect <- notify <- center); InfluxQL is written only
by its owners (core, ingest, detect); center reads no table itself (it calls notify.queries,
detect.queries); shared infrastructure names come from core/, never through another package.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("config", "core", "ingest", "detect", "notify", "center")
# Alembic's env.py collects every package's tables for the one migration history (core/migrations).
MIGRATION_ENV = Path("core/migrations/env.py")
# The CLI's development commands (`envwatch demo`, `envwatch services`, `envwatch simulate`).
DEVTOOLS_USERS = {Path("center/cli.py"), Path("center/cliopts.py"), Path("center/demo.py")}
CORE_NAMES = {"CHINA_TZ", "CHINA_ZONE", "CHINA_OFFSET", "china_time", "parse_time", "china_day_floor", "utc",
              "as_utc", "with_utc_times", "ident", "literal", "rfc3339", "tag_in", "time_between", "make_client",
              "make_engine", "reading"}
INFLUXQL = re.compile(r"\bSELECT\b.+\bFROM\b", re.S)


def _modules(*packages: str) -> Iterator[tuple[Path, ast.Module]]:
    for pkg in packages:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            yield f.relative_to(ROOT), ast.parse(f.read_text(encoding="utf-8"))


def _imports(tree: ast.Module, skip: set[int] = frozenset()) -> Iterator[tuple[int, str, list[str]]]:  # type: ignore[assignment]
    """(line, module, names) of every import, function-level ones included (but those in `skip`)."""
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


def test_imports_go_one_way() -> None:
    wrong = []
    for path, tree in _modules(*ORDER, "devtools"):
        pkg = path.parts[0]
        for line, module, _ in _imports(tree):
            top = module.split(".")[0]
            upward = top in ORDER and pkg in ORDER and ORDER.index(top) > ORDER.index(pkg)
            if (upward and path != MIGRATION_ENV) or (top == "devtools" and pkg != "devtools"
                                                      and path not in DEVTOOLS_USERS):
                wrong.append(f"{path}:{line} imports {module}")
    assert wrong == []


def test_influxql_is_written_only_by_its_owners() -> None:
    wrong = []
    for path, tree in _modules("config", "notify", "center", "devtools"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and INFLUXQL.search(node.value):
                wrong.append(f"{path}:{node.lineno}")
            elif isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if INFLUXQL.search(text):
                    wrong.append(f"{path}:{node.lineno}")
    assert wrong == []


def test_center_reads_no_table_itself() -> None:
    wrong = []
    for path, tree in _modules("center"):
        for line, module, names in _imports(tree):
            if module == "notify.tables" or (module == "detect.store" and any(n.endswith("_table") for n in names)) \
                    or (module == "sqlalchemy" and "select" in names):
                wrong.append(f"{path}:{line} imports {module} {names}")
    assert wrong == []


def test_shared_infrastructure_comes_from_core() -> None:
    wrong = []
    for path, tree in _modules(*ORDER, "devtools"):
        for line, module, names in _imports(tree):
            if module.split(".")[0] in ORDER[2:] + ("devtools",) and CORE_NAMES & set(names):
                wrong.append(f"{path}:{line} imports {sorted(CORE_NAMES & set(names))} from {module}")
        if path.parts[0] != "core":  # nor is offered by another package for import
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                    listed = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
                    if CORE_NAMES & listed:
                        wrong.append(f"{path}:{node.lineno} lists {sorted(CORE_NAMES & listed)} in __all__")
    assert wrong == []


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _module_name(path: Path) -> str:
    return ".".join(path.with_suffix("").parts).removesuffix(".__init__")


def test_no_import_cycle_between_modules() -> None:
    """Within and across packages the modules import one way, function-level imports included:
    an import moved into a function (to load it later) must not hide a cycle."""
    from graphlib import CycleError, TopologicalSorter

    graph: dict[str, set[str]] = {}
    trees = dict(_modules(*ORDER, "devtools"))
    known = {_module_name(p) for p in trees}
    for path, tree in trees.items():
        deps = graph.setdefault(_module_name(path), set())
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                       for n in ast.walk(block)}  # annotations only: never run
        for line, module, names in _imports(tree, skip=typing_only):
            for target in [module, *(f"{module}.{n}" for n in names)]:
                if target in known and target != _module_name(path):
                    deps.add(target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
