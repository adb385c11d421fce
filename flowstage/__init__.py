"""Flowstage: a workflow-execution simulator, the backend of a node-based workflow editor.

Installed, this is the one top-level import name. The repository keeps the subpackages at its
top level (`server/`, `actors/`, `simulation/`, `config/`); pyproject.toml's package-dir maps
them under `flowstage`, so users' own `config.py` or `server.py` can never shadow them.
"""

__all__: list[str] = []
