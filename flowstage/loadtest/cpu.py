"""CPU time: the load tester's own (this process, `time.process_time`, kept by the Tally) next to
the server's over the same stretch, so that a test shows whether the tester left the server
the machine.

The server's CPU is read, in this order of preference:
- on this machine (a loopback URL, Linux): the process listening on the URL's port, found in
  /proc/net/tcp{,6} and /proc/*/fd, its user + system time from /proc/<pid>/stat. When that
  process is this one (a server started in the same process, as the tests do), the two cannot
  be told apart and the server's CPU is not known;
- from the server's `GET /metrics`, `process_cpu_seconds_total` (Prometheus' process
  collector), read before and after;
- else not known ("n/a")."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from yarl import URL

from flowstage.loadtest.figures import CpuFigures
from flowstage.loadtest.http import CLIENT_ERRORS

__all__ = ["Fetch", "ServerCpu", "cpu_from_metrics", "listening_pid", "process_cpu_seconds"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp
_METRIC = b"process_cpu_seconds_total"
SAME_PROCESS = "not known: the server runs in the load tester's own process"

# GET a path of the server: (status, body); the caller's throttling and errors apply.
Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _LISTEN and \
                        int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listening_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The process that listens on TCP `port` on this machine, if this user may see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # another user's process, or one that just ended
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(fd.readlink()) in inodes:
                        return int(entry.name)
    return None


def process_cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """User + system CPU seconds of process `pid` so far (every thread), None if unreadable."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_from_metrics(text: bytes) -> float | None:
    """`process_cpu_seconds_total` from a Prometheus text exposition, None when absent."""
    for line in text.splitlines():
        if line.startswith(_METRIC) and line[len(_METRIC):len(_METRIC) + 1] in (b" ", b"{"):
            with contextlib.suppress(ValueError, IndexError):
                return float(line.split()[1])
    return None


class ServerCpu:
    """The server's CPU, read at `begin` and at `end` of the test."""

    def __init__(self, pid: int | None, source: str, first: float | None) -> None:
        self.pid = pid  # the server's process on this machine, when it was found
        self.source = source
        self._first = first

    @classmethod
    async def begin(cls, url: str, fetch: Fetch) -> ServerCpu:
        host, port = URL(url).host, URL(url).port
        if host in _LOOPBACK and port is not None:
            pid = listening_pid(port)
            if pid == os.getpid():
                return cls(None, SAME_PROCESS, None)
            first = None if pid is None else process_cpu_seconds(pid)
            if pid is not None and first is not None:
                return cls(pid, f"/proc/{pid}/stat (the process listening on port {port})",
                           first)
        first = await _metrics_cpu(fetch)
        if first is not None:
            return cls(None, "GET /metrics process_cpu_seconds_total", first)
        return cls(None, "not known: not a process on this machine this user can read, and "
                         "/metrics has no process_cpu_seconds_total", None)

    async def end(self, load_tester_seconds: float, fetch: Fetch) -> CpuFigures:
        """The figures of the test, the load tester's own CPU being `load_tester_seconds`."""
        last: float | None = None
        if self._first is not None:
            last = (process_cpu_seconds(self.pid) if self.pid is not None
                    else await _metrics_cpu(fetch))
        server = None if last is None or self._first is None else round(last - self._first, 3)
        ratio = round(load_tester_seconds / server, 3) if server else None
        source = self.source if last is not None or self._first is None else \
            f"not known: {self.source} could not be read at the end"
        return CpuFigures(round(load_tester_seconds, 3), server, ratio, source)


async def _metrics_cpu(fetch: Fetch) -> float | None:
    try:
        status, body = await fetch("/metrics")
    except CLIENT_ERRORS:  # a failed scrape only means the figure is not known
        return None
    return cpu_from_metrics(body) if status == 200 else None
