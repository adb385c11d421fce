"""What a load test is asked to do: its `Options`, their bounds (`check_options`), the
`flowstage loadtest` flags that fill them, and `LoadtestError`, raised when a test cannot start."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Literal

import msgspec

__all__ = [
    "MAX_DURATION_S",
    "MAX_RUNS",
    "MIN_NODES",
    "Follow",
    "LoadtestError",
    "Options",
    "Shape",
    "add_arguments",
    "check_options",
    "options_from_args",
]

# Without --allow-large a test is refused beyond these: a typo must not start a day-long flood.
MAX_RUNS = 100_000
MAX_DURATION_S = 3600.0
MAX_BATCH = 1000  # the most runs one execute starts (its `count`)

Shape = Literal["chain", "diamond", "fanout"]
# How runs are followed to their end: one multiplexed `/api/events` stream for all of them,
# `GET /api/runs/{id}` polled per run, or one `/api/runs/{id}/events` stream per run.
Follow = Literal["events", "poll", "run-events"]
FOLLOW_CHOICES: tuple[Follow, ...] = ("events", "poll", "run-events")
# The fewest nodes each shape can be built with (workload.build_workflow draws them).
MIN_NODES: dict[str, int] = {"chain": 2, "diamond": 4, "fanout": 3}


class LoadtestError(Exception):
    """The test cannot start (bad options, server unreachable or not Flowstage); the message
    says why. Problems during the test are counted in the summary, not raised."""


class Options(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "http://127.0.0.1:8080"
    runs: int = 100
    concurrency: int = 10
    # HTTP connections for requests (not streams), at most; None: one per run in flight.
    connections: int | None = None
    # Runs started by each execute POST (its `count`); 1: one POST per run, as clients do.
    batch: int = 1
    workflow: str | None = None
    nodes: int = 10
    shape: Shape = "chain"
    speed: float = 100.0
    failure_rate: float = 0.0
    follow: Follow = "events"
    # The flag before --follow: true means one stream per run (--follow run-events).
    subscribe: bool = False
    duration: float = 600.0
    json_path: str | None = None
    # The first N runs are paused and resumed once, right after they start, to time controls.
    control_sample: int = 0
    allow_large: bool = False
    # Seconds between two plain progress lines when the output is not a terminal.
    progress_interval: float = 2.0
    # Seconds a request may take (k6's default): at C runs in flight a server that starts X
    # runs/s answers an execute in about C / X s, and a request given up is an error.
    request_timeout: float = 60.0
    # A 429 is retried after its Retry-After, but never waiting longer than this per retry.
    max_retry_wait: float = 10.0

    @property
    def following(self) -> Follow:
        """How runs are followed, `subscribe` (the older flag) included."""
        return "run-events" if self.subscribe else self.follow


def check_options(opts: Options) -> None:
    problems = []
    if not opts.url.startswith(("http://", "https://")):
        problems.append(f"--url must be an http:// or https:// URL, not {opts.url!r}")
    if opts.runs < 1:
        problems.append("--runs must be at least 1")
    elif opts.runs > MAX_RUNS and not opts.allow_large:
        problems.append(f"--runs {opts.runs} is above {MAX_RUNS:,}; "
                        "add --allow-large if you mean it")
    if opts.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    if opts.connections is not None and opts.connections < 1:
        problems.append("--connections must be at least 1")
    if not 1 <= opts.batch <= MAX_BATCH:
        problems.append(f"--batch must be between 1 and {MAX_BATCH} (an execute's count)")
    if not (math.isfinite(opts.duration) and opts.duration > 0):
        problems.append("--duration must be a positive number of seconds")
    elif opts.duration > MAX_DURATION_S and not opts.allow_large:
        problems.append(f"--duration {opts.duration:g} is above {MAX_DURATION_S:g} s; "
                        "add --allow-large if you mean it")
    if not (math.isfinite(opts.speed) and 0 < opts.speed <= 1e6):
        problems.append("--speed must be greater than 0 and at most 1e6")
    if not 0.0 <= opts.failure_rate <= 1.0:
        problems.append("--failure-rate must be between 0 and 1")
    if opts.subscribe and opts.follow == "poll":
        problems.append("--subscribe is --follow run-events; it cannot go with --follow poll")
    if not (math.isfinite(opts.request_timeout) and 0 < opts.request_timeout <= 3600):
        problems.append("--request-timeout must be more than 0 and at most 3600 seconds")
    if not (math.isfinite(opts.max_retry_wait) and 0 <= opts.max_retry_wait <= 600):
        problems.append("--max-retry-wait must be between 0 and 600 seconds")
    if opts.control_sample < 0:
        problems.append("--control-sample must be 0 or more")
    if not (math.isfinite(opts.progress_interval) and opts.progress_interval > 0):
        problems.append("--progress-interval must be a positive number of seconds")
    if opts.json_path:
        folder = Path(opts.json_path).resolve().parent  # known now, not after the whole test
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            problems.append(f"--json {opts.json_path}: {folder} is not a folder this user can write to")
    if opts.workflow is None:
        least = MIN_NODES[opts.shape]
        if not least <= opts.nodes <= 1000:
            problems.append(f"--nodes for a {opts.shape} must be between {least} and 1000")
    if problems:
        raise LoadtestError("; ".join(problems))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load tester's own flags (`--loop` is the CLI's: `serve` has it too)."""
    d = Options()
    parser.add_argument("--url", default=d.url, help=f"the server (default {d.url})")
    parser.add_argument("--runs", type=int, default=d.runs, metavar="N",
                        help=f"runs to start (default {d.runs}; at most {MAX_RUNS:,} "
                             "without --allow-large)")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, metavar="C",
                        help=f"runs in flight at once (default {d.concurrency})")
    parser.add_argument("--connections", type=int, metavar="N",
                        help="HTTP connections the requests share, at most (default: one per "
                             "run in flight, as --concurrency, within the open-file limit); "
                             "event streams are apart")
    parser.add_argument("--batch", type=int, default=d.batch, metavar="B",
                        help="runs each execute POST starts (its \"count\", at most "
                             f"{MAX_BATCH}); default {d.batch}: one POST per run, as clients do. "
                             "For a generator that needs runs rather than requests")
    parser.add_argument("--workflow", metavar="ID", help="run this existing workflow "
                        "instead of creating one")
    parser.add_argument("--nodes", type=int, default=d.nodes, metavar="K",
                        help=f"nodes in the created workflow (default {d.nodes})")
    parser.add_argument("--shape", choices=("chain", "diamond", "fanout"), default=d.shape,
                        help="shape of the created workflow (default chain)")
    parser.add_argument("--speed", type=float, default=d.speed, metavar="S",
                        help=f"execute speed: simulated time runs S times faster "
                             f"(default {d.speed:g})")
    parser.add_argument("--failure-rate", type=float, default=d.failure_rate, metavar="P",
                        help="execute failureRate: chance that each node fails (default 0)")
    parser.add_argument("--follow", choices=FOLLOW_CHOICES, default=None,
                        help="how runs are followed to their end: events (default: one "
                             "/api/events stream for all runs), poll (GET /api/runs/{id} per "
                             "run) or run-events (one /api/runs/{id}/events stream per run)")
    parser.add_argument("--subscribe", action="store_true",
                        help="the same as --follow run-events")
    parser.add_argument("--duration", type=float, default=d.duration, metavar="T",
                        help=f"stop after T seconds whatever is left (default {d.duration:g}; "
                             f"at most {MAX_DURATION_S:g} without --allow-large)")
    parser.add_argument("--json", dest="json_path", metavar="FILE",
                        help="also write the summary as JSON to FILE")
    parser.add_argument("--control-sample", type=int, default=0, metavar="N",
                        help="pause and resume the first N runs once, timing the controls")
    parser.add_argument("--max-retry-wait", type=float, default=d.max_retry_wait,
                        metavar="SECONDS", help="a throttled request (429) is retried after its "
                        f"Retry-After, waiting at most this long (default {d.max_retry_wait:g})")
    parser.add_argument("--allow-large", action="store_true",
                        help=f"allow --runs above {MAX_RUNS:,} and --duration above "
                             f"{MAX_DURATION_S:g} s")
    parser.add_argument("--request-timeout", type=float, default=d.request_timeout, metavar="SECONDS",
                        help=f"seconds a request may take before it is an error (default "
                             f"{d.request_timeout:g}, as k6)")
    parser.add_argument("--progress-interval", type=float, default=d.progress_interval,
                        metavar="SECONDS", help="seconds between plain progress lines when "
                        "the output is not a terminal")


def options_from_args(args: argparse.Namespace) -> Options:
    """The checked Options the flags of `add_arguments` ask for; LoadtestError if out of bounds."""
    if args.subscribe and args.follow not in (None, "run-events"):
        raise LoadtestError(f"--subscribe is --follow run-events; it cannot go with "
                            f"--follow {args.follow}")
    follow: Follow = args.follow or ("run-events" if args.subscribe else "events")
    opts = Options(url=args.url, runs=args.runs, concurrency=args.concurrency,
                   connections=args.connections, batch=args.batch,
                   workflow=args.workflow, nodes=args.nodes, shape=args.shape,
                   speed=args.speed, failure_rate=args.failure_rate,
                   follow=follow,
                   duration=args.duration, max_retry_wait=args.max_retry_wait,
                   json_path=args.json_path, control_sample=args.control_sample,
                   allow_large=args.allow_large, progress_interval=args.progress_interval,
                   request_timeout=args.request_timeout)
    check_options(opts)
    return opts
