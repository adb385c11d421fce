"""`flowstage serve --workers N`: N server processes on one host, sharing its port.

Each worker is a `flowstage serve` of its own (the same arguments, plus `--reuse-port`): it
binds the port with SO_REUSEPORT, so the kernel spreads incoming connections over the workers,
and one more port of its own, where the other workers forward requests about its runs
(server.cluster). Workers share PostgreSQL and Redis, which `--workers` therefore requires.

This process only supervises, as gunicorn's arbiter or Celery's pool does: a worker that dies
is started again after a second (its runs are ended by the others, server.cluster); SIGTERM or
SIGINT stops every worker (each ends its runs and flushes) and then this process. A worker
that fails at start (exit status 2: a port in use, a database or Redis unreachable) stops them
all, with that status.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["supervise"]

log = logging.getLogger("flowstage.workers")

_RESTART_DELAY = 1.0
_STARTING = 10.0  # a worker ending with status 2 this soon after its start failed to start
_POLL = 0.2


class _Worker:
    def __init__(self, index: int, argv: Sequence[str]) -> None:
        self.index = index
        self._argv = argv
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        command = [sys.executable, "-m", "flowstage", *self._argv, "--workers", "1", "--reuse-port"]
        self.process = subprocess.Popen(command)
        self.started = time.monotonic()
        log.info("worker %d started (pid %d)", self.index, self.process.pid)


def supervise(argv: Sequence[str], count: int) -> int:
    """Run `count` workers of `flowstage <argv>` until told to stop; the exit status."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [_Worker(i, argv) for i in range(count)]
    status = 0
    try:
        for worker in workers:
            worker.start()
        while not stopping:
            time.sleep(_POLL)
            for worker in workers:
                assert worker.process is not None
                code = worker.process.poll()
                if code is None or stopping:
                    continue
                if code == 2 and time.monotonic() - worker.started < _STARTING:
                    log.error("worker %d could not start (exit status 2); stopping", worker.index)
                    stopping, status = True, 2
                    break
                log.warning("worker %d (pid %d) ended with status %d; starting it again",
                            worker.index, worker.process.pid, code)
                time.sleep(_RESTART_DELAY)
                worker.start()
    finally:
        _stop_all(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _stop_all(workers: list[_Worker]) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
