"""Real PostgreSQL and Redis servers of one's own, started from Debian's `postgresql` and
`redis-server` binaries in a temporary directory, on a free loopback port, and stopped (their
directory removed) at the end: what Flowstage's own tests run the store and the bus against,
and what `make run-cluster` (flowstage.devcluster) starts. Not for production data: PostgreSQL
runs without fsync.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "RedisServer", "ServiceMissing", "free_port", "running"]


class ServiceMissing(RuntimeError):
    """The server's program is not installed; the message names the Debian package."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _need(what: str, found: str | None, package: str) -> str:
    if not found:
        raise ServiceMissing(f"{what} is not installed (apt-get install {package})")
    return found


def _postgres_bin(name: str) -> str | None:
    """Debian keeps PostgreSQL's server programs out of PATH, in /usr/lib/postgresql/<v>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[4]))
    return str(found[-1]) if found else shutil.which(name)


class PostgresServer:
    """A PostgreSQL cluster of its own: trust authentication on 127.0.0.1, durability off
    (fsync, full-page writes), which a test server does not need."""

    def __init__(self) -> None:
        self.initdb = _need("PostgreSQL", _postgres_bin("initdb"), "postgresql")
        self.pg_ctl = _need("PostgreSQL", _postgres_bin("pg_ctl"), "postgresql")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="flowstage-pg-"))
        self.data = self.dir / "data"
        # PostgreSQL refuses to run as root; as root, it runs as Debian's `postgres` user.
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            owner = pwd.getpwnam(self._user)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://flowstage@127.0.0.1:{self.port}/flowstage"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (None when stopped)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, user=self._user, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr}{done.stdout}\n{tail}")

    def start(self) -> None:
        if not self.data.exists():
            self._run(self.initdb, "-D", str(self.data), "-U", "flowstage", "--auth=trust", "-E", "UTF8",
                      "--no-locale", "--no-sync")
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.dir} -F -c full_page_writes=off "
                   "-c max_connections=200")
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        if not hasattr(self, "_created"):
            self._created = True
            import psycopg

            with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE flowstage")

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def schema_url(self, schema: str) -> str:
        """A URL whose connections keep their tables in `schema` (a fresh one per test)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options=-csearch_path%3D{schema}"


class RedisServer:
    """A redis-server of its own on loopback, with its append-only file in its directory, as a
    production Redis has: stopped (`stop`) and started again, it has everything it had."""

    def __init__(self) -> None:
        self.binary = _need("Redis", shutil.which("redis-server") or _existing("/usr/bin/redis-server"),
                           "redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="flowstage-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None when stopped)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--protected-mode", "no",
             "--logfile", str(self.dir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on {self.port}: {(self.dir / 'log').read_text()[-2000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as `systemctl stop` does."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(sig)
            process.wait(10)

    def remove(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _existing(path: str) -> str | None:
    return path if Path(path).exists() else None


@contextlib.contextmanager
def running(server: PostgresServer | RedisServer) -> Iterator[PostgresServer | RedisServer]:
    try:
        server.start()
        yield server
    finally:
        server.remove()
