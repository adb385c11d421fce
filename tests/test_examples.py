"""examples/pytest-suite, run as its users run it: its own folder, its own pytest.ini, a pytest
session of its own in a subprocess, with nothing from this repository's tests/ in reach. It
proves the plugin the way a project that installed Flowstage meets it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SUITE = Path(__file__).resolve().parent.parent / "examples" / "pytest-suite"


def test_the_example_suite_passes_on_its_own(pytester: pytest.Pytester) -> None:
    shutil.copytree(SUITE, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)

    result.assert_outcomes(passed=8)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["configfile: pytest.ini", "plugins: *flowstage*"])
