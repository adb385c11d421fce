"""The tests' PostgreSQL and Redis: real servers from Debian's packages (flowstage.services),
started in a temporary directory. Without the programs the tests that need them skip, except in
CI (`CI` set), where they fail: `.ci/run` installs both with apt."""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

from flowstage.services import PostgresServer, RedisServer, ServiceMissing, free_port, running

__all__ = ["PostgresServer", "RedisServer", "free_port", "need", "running"]

S = TypeVar("S", PostgresServer, RedisServer)


def need(kind: type[S]) -> S:
    """A new `kind` server, or skip (fail in CI) saying which package to install."""
    try:
        return kind()
    except ServiceMissing as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"{exc}; .ci/run installs it") from None
        pytest.skip(str(exc))
