"""The import graph: no module of the checked packages takes part in an import cycle. Every
import counts, those under `if TYPE_CHECKING:` and inside functions too: a cycle hidden from
the interpreter is still two modules that must be read together."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"]
# The packages whose modules must be on no cycle (a prefix of module names).
CHECKED = ("flowstage.server", "flowstage.simulation", "flowstage.config")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The first-party modules `name` imports: `from a.b import c` is a.b.c if that is a
    module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    yield f"{source}.{alias.name}"
                elif source in modules:
                    yield source


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_sees_every_module() -> None:
    modules = _modules()
    assert {"flowstage", "flowstage.testing", "flowstage.server.app", "flowstage.server.routes.runs",
            "flowstage.actors.engine", "flowstage.simulation.errors", "flowstage.config"} <= set(modules)
    graph = {name: set(_imports(name, path, modules)) - {name} for name, path in modules.items()}
    assert {"flowstage.server.keys", "flowstage.server.sse"} <= graph["flowstage.server.app"]


def test_no_checked_module_is_on_an_import_cycle() -> None:
    modules = _modules()
    graph = {name: set(_imports(name, path, modules)) - {name} for name, path in modules.items()}
    on_cycles = [c for c in _cycles(graph) if any(m.startswith(CHECKED) for m in c)]
    assert on_cycles == []
