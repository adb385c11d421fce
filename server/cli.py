"""`flowstage serve [--host] [--port] [--data-dir] [--config FILE]` (and `python -m server`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from config import SettingsError, load_settings
from server.store.db import SchemaTooNew

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    from server.app import create_app  # after logging is set up

    try:
        web.run_app(create_app(settings), host=settings.host, port=settings.port,
                    access_log=None, print=lambda msg: logging.getLogger("flowstage").info(msg.strip()))
    except SchemaTooNew as exc:
        print(f"flowstage: {exc}", file=sys.stderr)
        return 2
    return 0
