"""The shape of the code, checked: no import cycles, each layer imports only those below it,
modules and runtime classes stay small (docs/architecture.md says why and where)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder in the repository -> the package it installs as.
PACKAGES = {"flowstage": "flowstage", "server": "flowstage.server", "actors": "flowstage.actors",
            "simulation": "flowstage.simulation", "config": "flowstage.config"}
# Each layer and the flowstage packages it may import (besides itself).
LAYERS = {
    "flowstage.config": set(),
    "flowstage.simulation": {"flowstage.config"},
    "flowstage.actors": {"flowstage.config", "flowstage.simulation"},
    # The CLI's `loadtest` command runs the load tester (and nothing else imports it: below).
    "flowstage.server": {"flowstage.config", "flowstage.simulation", "flowstage.actors", "flowstage.loadtest"},
    # An HTTP client of the server: it may share the clock and the node catalogue, not the server.
    "flowstage.loadtest": {"flowstage.config", "flowstage.simulation", "flowstage.actors"},
}
MAX_MODULE_LINES = 400
MAX_RUNTIME_CLASS_METHODS = 20


def _modules() -> Iterator[tuple[str, Path]]:
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


MODULES = dict(_modules())


def _imports(name: str, path: Path) -> set[str]:
    """The flowstage modules `name` imports, TYPE_CHECKING imports included."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    """The layer a module is in; the root package (its version) sits below them all."""
    if module == "flowstage":
        return "flowstage.config"
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def test_the_tree_is_found() -> None:
    assert {"flowstage.actors.engine", "flowstage.server.app", "flowstage.simulation.plan",
            "flowstage.config.settings", "flowstage.testing"} <= MODULES.keys()


def test_no_import_cycles() -> None:
    # Depth-first search; a back edge is a cycle, reported as the modules around it.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == 1:
                cycles.append([*stack[stack.index(imported):], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("layer", list(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = sorted(f"{module} -> {imported}" for module, imports in GRAPH.items() if _layer(module) == layer
                   for imported in imports if _layer(imported) not in {layer, *LAYERS[layer]})
    assert wrong == []


def test_the_load_tester_is_imported_only_by_its_command() -> None:
    importers = {module for module, imports in GRAPH.items() if _layer(module) != "flowstage.loadtest"
                 and any(_layer(imported) == "flowstage.loadtest" for imported in imports)}
    assert importers == {"flowstage.server.cli"}


def test_product_modules_stay_small() -> None:
    big = {name: lines for name, path in MODULES.items()
           if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_runtime_classes_stay_small() -> None:
    # Methods by name: a property's getter and setter are one.
    big = {}
    for name, path in MODULES.items():
        if _layer(name) != "flowstage.actors":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
                if len(methods) > MAX_RUNTIME_CLASS_METHODS:
                    big[f"{name}.{node.name}"] = len(methods)
    assert big == {}


def test_every_module_says_what_it_owns() -> None:
    assert [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))] == []
