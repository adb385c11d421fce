"""Helpers the benchmark scripts share: a free port, CPU pinning, waiting for a server."""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request

__all__ = ["free_port", "pinned", "wait_up"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: str) -> list[str]:
    """`cmd` pinned to `cpu` with taskset, where there is more than one CPU to choose from."""
    many = (os.cpu_count() or 1) > 1
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and many else cmd


def wait_up(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")
