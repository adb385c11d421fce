"""The server's resident memory (RSS) before the test, at its peak and after it, so that a test
shows whether finished runs leave memory.

Read from /proc/<pid>/statm when the server is a process on this machine (the one cpu.py
found), else from its `GET /metrics` `process_resident_memory_bytes`, else not known ("n/a").
The peak is the highest of samples taken every `SAMPLE_S` while the runs go (a shorter spike
can fall between two). "After" is read `SETTLE_S` after the last run was followed: by then the
server has flushed the finished runs and let them go from memory (it keeps the last
`retain_finished` of them, a thousand by default, for reads)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from flowstage.loadtest.cpu import SAME_PROCESS, Fetch, ServerCpu
from flowstage.loadtest.figures import MemoryFigures
from flowstage.loadtest.http import CLIENT_ERRORS

__all__ = ["SAMPLE_S", "SETTLE_S", "MemoryWatch", "process_rss_bytes", "rss_from_metrics"]

SAMPLE_S = 0.5
SETTLE_S = 1.0
_METRIC = b"process_resident_memory_bytes"
_MIB = 1024 * 1024


def process_rss_bytes(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The resident set size of process `pid`, None if unreadable."""
    try:
        resident = (proc / str(pid) / "statm").read_text().split()[1]
    except (OSError, IndexError):
        return None
    return int(resident) * os.sysconf("SC_PAGE_SIZE")


def rss_from_metrics(text: bytes) -> int | None:
    """`process_resident_memory_bytes` from a Prometheus text exposition, None when absent."""
    for line in text.splitlines():
        if line.startswith(_METRIC) and line[len(_METRIC):len(_METRIC) + 1] in (b" ", b"{"):
            with contextlib.suppress(ValueError, IndexError):
                return int(float(line.split()[1]))
    return None


class MemoryWatch:
    """Samples the server's RSS from `begin` to `end`."""

    def __init__(self, cpu: ServerCpu, fetch: Fetch) -> None:
        self._pid = cpu.pid
        self._fetch = fetch
        self._same_process = cpu.source == SAME_PROCESS
        self.source = (f"/proc/{cpu.pid}/statm" if cpu.pid is not None
                       else "GET /metrics process_resident_memory_bytes")
        self._before: int | None = None
        self._peak: int | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def begin(cls, cpu: ServerCpu, fetch: Fetch) -> MemoryWatch:
        watch = cls(cpu, fetch)
        if watch._same_process:
            return watch
        watch._before = watch._peak = await watch._read()
        if watch._before is not None:
            watch._task = asyncio.create_task(watch._sample(), name="flowstage-loadtest-memory")
        return watch

    async def end(self, settle: float = SETTLE_S) -> MemoryFigures:
        """Stop sampling; wait `settle` seconds and read the RSS once more."""
        if self._same_process:
            return MemoryFigures(None, None, None, SAME_PROCESS)
        if self._task is None:
            return MemoryFigures(None, None, None, f"not known: {self.source} could not be read")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await asyncio.sleep(settle)
        after = await self._read()
        self._note(after)
        return MemoryFigures(_mib(self._before), _mib(self._peak), _mib(after), self.source)

    def _note(self, rss: int | None) -> None:
        if rss is not None and (self._peak is None or rss > self._peak):
            self._peak = rss

    async def _sample(self) -> None:
        # /metrics costs the server a scrape: sample it four times less often than /proc.
        every = SAMPLE_S if self._pid is not None else 4 * SAMPLE_S
        while True:
            await asyncio.sleep(every)
            self._note(await self._read())

    async def _read(self) -> int | None:
        if self._pid is not None:
            return process_rss_bytes(self._pid)
        try:
            status, body = await self._fetch("/metrics")
        except CLIENT_ERRORS:  # a failed scrape only means this sample is missing
            return None
        return rss_from_metrics(body) if status == 200 else None


def _mib(rss: int | None) -> float | None:
    return None if rss is None else round(rss / _MIB, 1)
