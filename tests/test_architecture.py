"""The shape of the package (docs/architecture.md), checked on the source text.

Data flows one way: config → poller → source → snapshot → sinks. These tests
keep the layout from drifting back: who may import whom, no import cycle, a
top level that reads like a table of contents, and no module or function too
long to read top to bottom.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "exporter"
# The wiring (the app package: the application, its root settings) and the
# command line are the only places that know every part by name.
WIRING = ("exporter.app", "exporter.cli")
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, name: str) -> Iterator[str]:
    """Every exporter module `path` imports, at any depth (a function's lazy
    import included), except under `if TYPE_CHECKING:`."""

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                yield from (n for other in child.orelse for n in [other, *walk(other)])
                continue
            yield child
            yield from walk(child)

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("exporter"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("exporter"):
                yield base


def resolve(target: str, known: dict[str, Path]) -> str:
    """The module an import lands in (`from exporter.x import y` may name a module y)."""
    while target not in known and "." in target:
        target = target.rpartition(".")[0]
    return target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {resolve(t, known) for t in imported(path, name)} - {name} for name, path in known.items()}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_only_the_wiring_imports_sinks() -> None:
    offenders = {name: sorted(t for t in targets if within(t, "exporter.sinks"))
                 for name, targets in graph().items()
                 if not within(name, "exporter.sinks") and not any(within(name, w) for w in WIRING)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_sources_and_sinks_do_not_know_each_other() -> None:
    edges = graph()
    from_sources = {n: sorted(t for t in ts if within(t, "exporter.sinks"))
                    for n, ts in edges.items() if within(n, "exporter.sources")}
    from_sinks = {n: sorted(t for t in ts if within(t, "exporter.sources"))
                  for n, ts in edges.items() if within(n, "exporter.sinks")}
    assert {n: f for n, f in {**from_sources, **from_sinks}.items() if f} == {}


def test_sources_never_import_prometheus_client_or_opentelemetry() -> None:
    found = []
    for name, path in modules().items():
        if within(name, "exporter.sources"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [(name, n) for n in names if n.startswith(("prometheus_client", "opentelemetry"))]
    assert found == []


def test_the_runner_imports_no_sink_and_no_web() -> None:
    edges = graph()
    assert not {t for t in edges["exporter.runner"] if within(t, "exporter.sinks") or within(t, "exporter.web")}


def test_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    # A package importing its own submodules in __init__ is how packages export names, not a cycle.
    real = [c for c in cycles if not all(within(c[i + 1], c[i]) or within(c[i], c[i + 1]) for i in range(len(c) - 1))]
    assert real == []


def test_the_top_level_reads_like_a_table_of_contents() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_are_short(name: str) -> None:
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_every_module_says_what_it_is_for() -> None:
    missing = [name for name, path in modules().items()
               if path.read_text().strip() and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert missing == []
