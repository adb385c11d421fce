"""Packaging: pyproject.toml lists every package of the tree under the one import name
`flowstage` (a subpackage missing from the list is missing from the wheel). .ci/wheel_check.py
builds the real wheel, installs it outside the checkout and runs it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_in_the_tree_is_listed_under_flowstage() -> None:
    mapping: dict[str, str] = SETUPTOOLS["package-dir"]
    in_tree = {"flowstage"}
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            in_tree.add(".".join((name, *relative.parts)))
    assert sorted(SETUPTOOLS["packages"]) == sorted(in_tree)
