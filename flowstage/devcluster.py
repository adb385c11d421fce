"""`make run-cluster` (`python -m flowstage.devcluster`): a throwaway cluster to try scale-out
on one machine. It starts a PostgreSQL and a Redis of its own in a temporary directory, from
Debian's `postgresql` and `redis-server` (as the tests do, flowstage.services), then
`flowstage serve --workers 2` on them, until Ctrl-C; then it stops everything and removes the
directory (the cluster's data goes with it: it is for trying, not for keeping).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from flowstage.services import PostgresServer, RedisServer, ServiceMissing, running

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowstage.devcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="the port the workers share (default 8080)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--data-dir", default="./data-cluster", help="uploaded files (default ./data-cluster)")
    args = parser.parse_args(argv)
    try:
        postgres, redis = PostgresServer(), RedisServer()
    except ServiceMissing as exc:
        print(f"flowstage devcluster: {exc}", file=sys.stderr)
        return 2
    with running(postgres), running(redis):
        env = {**os.environ, "FLOWSTAGE_STORAGE": "postgres", "FLOWSTAGE_DATABASE_URL": postgres.url,
               "FLOWSTAGE_BUS": "redis", "FLOWSTAGE_REDIS_URL": redis.url}
        print(f"PostgreSQL: {postgres.url}\nRedis:      {redis.url}\n"
              f"Flowstage:  http://127.0.0.1:{args.port}/ ({args.workers} workers; Ctrl-C stops everything)",
              flush=True)
        server = subprocess.Popen([sys.executable, "-m", "flowstage", "serve", "--port", str(args.port),
                                   "--data-dir", args.data_dir, "--workers", str(args.workers)], env=env)
        try:
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C (or SIGINT to this process alone): stop the workers
            server.send_signal(signal.SIGINT)
            return server.wait()


if __name__ == "__main__":
    sys.exit(main())
