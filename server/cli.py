"""`flowstage serve [--host] [--port] [--data-dir] [--config FILE] [--loop uvloop]` and
`flowstage loadtest --url URL --runs N --concurrency C ...` (and `python -m server`)."""

from __future__ import annotations

import argparse
import logging
import os
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
    serve.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                       help="event loop (uvloop needs: pip install -e '.[uvloop]')")
    loadtest = commands.add_parser(
        "loadtest", help="drive a server with concurrent runs and report latency and errors")
    add_loadtest_arguments(loadtest)
    return parser


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
             "speed": args.speed, "storage": args.storage},
        )
    except SettingsError as exc:
        print(f"flowstage: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from flowstage.server.app import create_app  # after logging is set up

    # loop=None is aiohttp's default (a new asyncio loop); run_app closes the loop it ran.
    loop = None if factory is None else factory()
    try:
        app = create_app(settings)
        app.on_startup.append(_tune_gc)  # runs after the store and the engine have started
        web.run_app(app, host=settings.host, port=settings.port,
                    access_log=None, print=lambda msg: logging.getLogger("flowstage").info(msg.strip()),
                    loop=loop,
                    # Cancel a handler when its client goes away: an idle SSE stream is freed
                    # at once instead of at its next ping.
                    handler_cancellation=True)
    except SchemaTooNew as exc:
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    return 0
