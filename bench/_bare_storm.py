"""The client half of bench/loadtest_e2e.py's floor: POSTs sent all at once to a server (the bare
handler of bench/_bare_execute.py) through the load tester's own connection pool, the way
`flowstage loadtest` sends its executes; prints one JSON line with the latencies.

Usage: python bench/_bare_storm.py URL PATH POSTS CONNECTIONS
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from yarl import URL

from flowstage.actors.tuning import tune_gc
from flowstage.loadtest import connection_budget
from flowstage.loadtest.wire import Pool


async def storm(url: str, path: str, posts: int, connections: int) -> dict[str, float]:
    pool = Pool(URL(url), min(connections, connection_budget()), 60.0)
    request = pool.encode("POST", path, {"Content-Type": "application/json"}, b"{}")
    seconds: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        sent = time.perf_counter()
        try:
            response = await pool.send(request)
        except (OSError, TimeoutError):
            errors += 1
            return
        if response.status != 202:
            errors += 1
            return
        seconds.append(time.perf_counter() - sent)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(posts)))
    finally:
        pool.close()
    wall = time.perf_counter() - began
    cuts = statistics.quantiles(seconds, n=100) if len(seconds) > 1 else seconds * 99
    return {"p50 s": cuts[49], "p99 s": cuts[98], "wall s": wall, "errors": errors}


def main() -> None:
    url, path, posts, connections = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tune_gc()  # as `flowstage loadtest` does
    print(json.dumps(asyncio.run(storm(url, path, posts, connections))))


if __name__ == "__main__":
    main()
