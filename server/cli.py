"""`flowstage serve [--host] [--port] [--data-dir] [--config FILE] [--loop uvloop]` and
`flowstage loadtest --url URL --runs N --concurrency C ...` (and `python -m flowstage`): the
command line, and the choice of event loop (`--loop`) both commands share.

The load tester (flowstage.loadtest, and rich with it) is imported only when `loadtest` is the
command: its flags are added to the parser once the command is known."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from flowstage.actors.tuning import tune_gc
from flowstage.config import SettingsError, defaults, load_settings
from flowstage.server.store import BackendMissing
from flowstage.server.store.db import SchemaTooNew
from flowstage.simulation.errors import Unavailable

__all__ = ["main"]

_LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class _LoopUnavailable(Exception):
    """`--loop` names an event loop that is not installed; the message says how to get it."""


def _add_loop_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help=help_text)


def _loop_factory(name: str) -> _LoopFactory | None:
    """The event-loop factory `--loop` names (None: asyncio's own loop)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise _LoopUnavailable("--loop uvloop needs uvloop: pip install 'flowstage[uvloop]'") from None
    factory: _LoopFactory = uvloop.new_event_loop
    return factory


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowstage", description="Flowstage workflow simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    # The flags default to None so that a config file and the environment still apply; the
    # defaults shown are defaults.toml's.
    default = defaults()
    serve.add_argument("--host", help=f"address to listen on (default {default['host']})")
    serve.add_argument("--port", type=int, help=f"port to listen on (default {default['port']})")
    serve.add_argument("--data-dir", help=f"where the database and files live (default {default['data_dir']})")
    serve.add_argument("--config", help="a TOML file overriding the defaults")
    serve.add_argument("--speed", type=float, help="default simulated-time scale")
    serve.add_argument("--storage", choices=("sqlite", "memory", "postgres"), help="storage backend")
    serve.add_argument("--database-url", help="the PostgreSQL of --storage postgres (postgresql://...)")
    serve.add_argument("--bus", choices=("local", "redis"), help="where run events go (redis: shared by processes)")
    serve.add_argument("--redis-url", help="the Redis of --bus redis (redis://host:6379/0)")
    serve.add_argument("--workers", type=_positive, default=1, metavar="N",
                       help="N server processes sharing the port (needs storage postgres and bus redis)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    serve.add_argument("--test-mode", action="store_const", const=True,
                       help="virtual time, scripts, a journal and /__flowstage/* (docs/testing.md)")
    _add_loop_argument(serve, "event loop (uvloop needs: pip install 'flowstage[uvloop]')")
    # Its flags come from _loadtest_parser, once `loadtest` is known to be the command.
    commands.add_parser("loadtest", add_help=False,
                        help="drive a server with concurrent runs and report latency and errors")
    return parser


def _loadtest_parser() -> argparse.ArgumentParser:
    from flowstage import loadtest

    parser = argparse.ArgumentParser(prog="flowstage loadtest")
    loadtest.add_arguments(parser)
    _add_loop_argument(parser, "the load generator's event loop (uvloop needs the uvloop extra)")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# Connections the kernel completes ahead of accept(). aiohttp's default is 128: a load test
# that opens thousands of connections at once overflowed it, and every connection dropped
# waited a SYN retransmission (1 s, then 3 s, 7 s...) before its first request. The kernel
# clamps this to net.core.somaxconn (4096 on current Linux); gunicorn and uvicorn use 2048.
LISTEN_BACKLOG = 4096


def _listen(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Bind every address `host` names, as aiohttp would, but before anything else happens: a
    busy port is then reported before the data directory is touched, and aiohttp serves on
    these sockets (no window for another process to take the port in between). `reuse_port`:
    shared with the other workers of `--workers` (SO_REUSEPORT)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio does: the IPv4 address gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listen_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use; choose another with --port"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port} ({reason}); choose another address with --host"


async def _tune_gc(app: web.Application) -> None:
    """A served process tunes the garbage collector for many concurrent runs (see
    actors.tuning); tests keep Python's defaults."""
    tune_gc()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "loadtest":
        args, unknown = _loadtest_parser().parse_known_args(unknown, args)
    if unknown:  # worded and reported as parse_args would
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "loadtest":
        return _loadtest(args)
    return _serve(args, list(sys.argv[1:] if argv is None else argv))


def _loadtest(args: argparse.Namespace) -> int:
    """`flowstage loadtest`: 0, 1 or 130 as loadtest.command says; 2 when it cannot start."""
    from flowstage import loadtest

    try:
        opts = loadtest.options_from_args(args)
        return loadtest.command(opts, _loop_factory(args.loop))
    except (loadtest.LoadtestError, _LoopUnavailable) as exc:
        print(f"flowstage loadtest: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        factory = _loop_factory(args.loop)
    except _LoopUnavailable as exc:
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config, os.environ,
            {"host": args.host, "port": args.port, "data_dir": args.data_dir,
             "speed": args.speed, "storage": args.storage, "database_url": args.database_url,
             "bus": args.bus, "redis_url": args.redis_url,
             "test_mode": args.test_mode},
        )
    except SettingsError as exc:
        print(f"flowstage: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        if settings.storage != "postgres" or settings.bus != "redis":
            print('flowstage: --workers needs storage = "postgres" and bus = "redis" (docs/scaling.md)',
                  file=sys.stderr)
            return 2
        if settings.test_mode:  # one virtual clock per process: /__flowstage/clock would move one
            print("flowstage: --workers and --test-mode do not go together (each worker would have "
                  "a clock of its own)", file=sys.stderr)
            return 2
        from flowstage.server.workers import supervise

        return supervise(argv, args.workers)
    from flowstage.server.app import create_app, reachable_address  # after logging is set up

    try:
        sockets = _listen(settings.host, settings.port, args.reuse_port)
        cluster_address = None
        if settings.bus == "redis":  # where the other processes reach this one
            own = sockets[0]
            if args.reuse_port:  # the shared port reaches any worker: one of its own
                own = _listen(settings.host, 0)[0]
                sockets.append(own)
            cluster_address = reachable_address(settings.host, own.getsockname()[1])
    except OSError as exc:
        print(f"flowstage: {_listen_error(settings.host, settings.port, exc)}", file=sys.stderr)
        return 2

    # loop=None is aiohttp's default (a new asyncio loop); run_app closes the loop it ran.
    loop = None if factory is None else factory()
    try:
        app = create_app(settings, cluster_address=cluster_address)
        app.on_startup.append(_tune_gc)  # runs after the store and the engine have started
        web.run_app(app, sock=sockets, access_log=None, loop=loop, backlog=LISTEN_BACKLOG,
                    print=lambda msg: logging.getLogger("flowstage").info(msg.strip()),
                    # Cancel a handler when its client goes away: an idle SSE stream is freed
                    # at once instead of at its next ping.
                    handler_cancellation=True)
    except (SchemaTooNew, Unavailable, BackendMissing) as exc:
        # One line: a database that is newer, PostgreSQL or Redis unreachable (its URL without
        # the password), or a driver not installed.
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    finally:
        for sock in sockets:
            sock.close()
    return 0
