# Two commands a new user needs: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run run-cluster test lint install install-test install-dev bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Lint checks the tests too, so mypy needs the test dependencies beside ruff and mypy.
$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

# `make run-cluster`: the drivers of storage = "postgres" and bus = "redis".
$(VENV)/.installed-cluster: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[postgres,redis]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/flowstage serve

# PostgreSQL and Redis of its own in a temporary directory (Debian's postgresql and
# redis-server), and two workers on them at http://127.0.0.1:8080 (docs/scaling.md).
run-cluster: $(VENV)/.installed-cluster
	$(PY) -m flowstage.devcluster

# The TypeScript contract test's generator and compiler, pinned by tests/typescript/package-lock.json.
# Without npm they are not installed, and that one test skips.
TS_DEPS := tests/typescript/node_modules/.package-lock.json
$(TS_DEPS): tests/typescript/package-lock.json
	if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/typescript --no-audit --no-fund; fi

test: install-test $(TS_DEPS)
	$(PY) -m pytest -q

# ruff and mypy settings are in pyproject.toml. mypy cannot follow setuptools' editable-install
# hook (the package-dir mapping has no folder named flowstage holding the subpackages), so it
# checks a tree of symlinks laid out as the wheel installs the packages, rebuilt every time.
TYPECHECK := $(VENV)/typecheck
lint: install-dev
	$(VENV)/bin/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/flowstage
	ln -s $(CURDIR)/flowstage/*.py $(CURDIR)/flowstage/loadtest $(TYPECHECK)/flowstage/
	for package in server actors simulation config; do ln -s $(CURDIR)/$$package $(TYPECHECK)/flowstage/; done
	$(VENV)/bin/mypy $(TYPECHECK)/flowstage tests bench .ci/wheel_check.py
	$(VENV)/bin/vulture server actors simulation config flowstage --min-confidence 80

clean:
	rm -rf $(VENV) data data-cluster .pytest_cache .ruff_cache .mypy_cache tests/typescript/node_modules
