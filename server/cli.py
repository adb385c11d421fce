"""`flowstage serve [--host] [--port] [--data-dir] [--config FILE] [--loop uvloop]` and
`flowstage loadtest --url URL --runs N --concurrency C ...` (and `python -m flowstage`)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from flowstage.actors.tuning import tune_gc
from flowstage.config import SettingsError, load_settings
from flowstage.server.loadtest import LoadtestError, loop_factory
from flowstage.server.loadtest import add_arguments as add_loadtest_arguments
from flowstage.server.loadtest import command as loadtest_command
from flowstage.server.store.db import SchemaTooNew

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowstage", description="Flowstage workflow simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--data-dir", help="where the database and files live (default ./data)")
    serve.add_argument("--config", help="a TOML file overriding the defaults")
    serve.add_argument("--speed", type=float, help="default simulated-time scale")
    serve.add_argument("--storage", choices=("sqlite", "memory"), help="storage backend")
    serve.add_argument("--test-mode", action="store_const", const=True,
                       help="virtual time, scripts, a journal and /__flowstage/* (docs/testing.md)")
    serve.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                       help="event loop (uvloop needs: pip install -e '.[uvloop]')")
    loadtest = commands.add_parser(
        "loadtest", help="drive a server with concurrent runs and report latency and errors")
    add_loadtest_arguments(loadtest)
    return parser


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bind every address `host` names, as aiohttp would, but before anything else happens: a
    busy port is then reported before the data directory is touched, and aiohttp serves on
    these sockets (no window for another process to take the port in between)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    args = _parser().parse_args(argv)
    if args.command == "loadtest":
        return loadtest_command(args)
    try:
        factory = loop_factory(args.loop)
    except LoadtestError as exc:
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config, os.environ,
            {"host": args.host, "port": args.port, "data_dir": args.data_dir,
             "speed": args.speed, "storage": args.storage, "test_mode": args.test_mode},
        )
    except SettingsError as exc:
        print(f"flowstage: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        sockets = _listen(settings.host, settings.port)
    except OSError as exc:
        print(f"flowstage: {_listen_error(settings.host, settings.port, exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from flowstage.server.app import create_app  # after logging is set up

    # loop=None is aiohttp's default (a new asyncio loop); run_app closes the loop it ran.
    loop = None if factory is None else factory()
    try:
        app = create_app(settings)
        app.on_startup.append(_tune_gc)  # runs after the store and the engine have started
        web.run_app(app, sock=sockets, access_log=None, loop=loop,
                    print=lambda msg: logging.getLogger("flowstage").info(msg.strip()),
                    # Cancel a handler when its client goes away: an idle SSE stream is freed
                    # at once instead of at its next ping.
                    handler_cancellation=True)
    except SchemaTooNew as exc:
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    finally:
        for sock in sockets:
            sock.close()
    return 0
