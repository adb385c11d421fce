"""The pytest plugin (entry point `pytest11` named `flowstage`): active wherever Flowstage is
installed. docs/testing.md is the user's guide.

Fixtures:
- `flowstage`: a Stage (flowstage.testing) for one test, served through pytest-aiohttp's
  `aiohttp_client` on the test's own loop; an in-memory store and a virtual clock.
- `flowstage_clock`: that stage's VirtualClock.
- `flowstage_live_server` (session): a real server on a free port, in a thread with its own
  loop, for browsers and clients that are not asyncio; `.url`, plus `.clock(...)`, `.reset()`.
- `flowstage_live`: that server after a reset (store, runs, scripts, journal and clock emptied).

`@pytest.mark.flowstage(seed=, time="manual"|"autojump"|"realtime", speed=, settings={...})`
sets a test's stage; the ini options `flowstage_time`, `flowstage_seed` and `flowstage_speed`
set the defaults. A stage fails its test at teardown if Flowstage logged an error nobody
handled, or if `script.assert_all_used` is set and a scripted rule never matched.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Flowstage itself is imported when a fixture is first used, not when pytest loads the plugin:
# the plugin is loaded in every pytest session of an environment that has Flowstage, and the
# server's modules take 0.65 s to import.
if TYPE_CHECKING:
    from flowstage.config import Settings
    from flowstage.testing import LiveServer, Stage, TimeMode, VirtualClock

__all__ = ["StageOptions"]

_TIMES = ("manual", "autojump", "realtime")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("flowstage_time", "how a Flowstage stage's clock moves: manual, autojump or realtime",
                  default="manual")
    parser.addini("flowstage_seed", "the seed a stage's runs draw their seeds from", default="0")
    parser.addini("flowstage_speed", "a stage's default simulated-time scale", default="1.0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flowstage(seed=0, time='manual', speed=1.0, settings=None): how the test's Flowstage "
                   "stage is set up (time: manual, autojump or realtime)")


@dataclass(frozen=True)
class StageOptions:
    seed: int = 0
    time: TimeMode = "manual"
    speed: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)


def stage_options(request: pytest.FixtureRequest) -> StageOptions:
    """The ini defaults, overridden by the test's `flowstage` marker."""
    config = request.config
    values: dict[str, Any] = {"seed": int(config.getini("flowstage_seed")),
                              "time": config.getini("flowstage_time"),
                              "speed": float(config.getini("flowstage_speed"))}
    marker = request.node.get_closest_marker("flowstage")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.flowstage takes keywords only: seed=, time=, speed=, settings=")
        unknown = set(marker.kwargs) - {"seed", "time", "speed", "settings"}
        if unknown:
            raise pytest.UsageError(f"@pytest.mark.flowstage has no option {sorted(unknown)}")
        values.update(marker.kwargs)
    if values["time"] not in _TIMES:
        raise pytest.UsageError(f"flowstage time must be one of {_TIMES}, not {values['time']!r}")
    return StageOptions(seed=values["seed"], time=values["time"], speed=values["speed"],
                        settings=dict(values.get("settings") or {}))


def stage_settings(options: StageOptions, data_dir: Path) -> Settings:
    from flowstage.config import load_settings

    base: dict[str, Any] = {
        "test_mode": True, "storage": "memory", "data_dir": str(data_dir), "seed_demo_data": False,
        "rate_limit_per_second": 0, "speed": options.speed, "log_level": "warning",
        # Events reach SSE streams on the next turn of the loop, not 5 ms later.
        "sse_batch_ms": 0,
    }
    base.update(options.settings)
    base["autojump"] = options.time == "autojump"
    return load_settings(overrides=base, overrides_source="the flowstage marker or flowstage_* ini options")


class _Errors(logging.Handler):
    """Errors Flowstage logged (an engine or handler failure nobody answered for)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="session")
def _flowstage_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the uploaded bytes of every stage of the session. Stages never run at
    once, and each stage's store removes at start the bytes its (empty) database does not
    name, so a test never sees another's files; a directory per test cost 4-13 ms of mkdir and
    rmtree, more than the rest of a stage's set-up."""
    return tmp_path_factory.mktemp("flowstage-files")


@pytest.fixture
async def flowstage(request: pytest.FixtureRequest, aiohttp_client: Any, _flowstage_files: Path) \
        -> AsyncIterator[Stage]:
    """A Stage for this test (see flowstage.testing). `aiohttp_client` is pytest-aiohttp's
    (`pip install 'flowstage[testing]'`): the stage is served on the test's own loop."""
    from flowstage.actors.clock import SystemClock
    from flowstage.server.app import create_app
    from flowstage.server.testmode import TEST_MODE
    from flowstage.testing import Stage

    options = stage_options(request)
    settings = stage_settings(options, _flowstage_files)
    app = create_app(settings, clock=SystemClock() if options.time == "realtime" else None)
    app[TEST_MODE].seed(options.seed)
    errors = _Errors()
    logger = logging.getLogger("flowstage")
    logger.addHandler(errors)
    try:
        client = await aiohttp_client(app)
        stage = Stage(client, options.time)
        yield stage
    finally:
        logger.removeHandler(errors)
    problems = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    if problems:
        pytest.fail("Flowstage logged errors nobody handled:\n" + "\n".join(problems), pytrace=False)
    if stage.script.assert_all_used and stage.script.unused():
        pytest.fail(f"scripted rules never used: {stage.script.unused()}", pytrace=False)


@pytest.fixture
def flowstage_clock(flowstage: Stage) -> VirtualClock:
    """The `flowstage` stage's virtual clock."""
    return flowstage.clock


@pytest.fixture(scope="session")
def flowstage_live_server() -> Iterator[LiveServer]:
    """One real server for the session (test mode, in-memory store, manual time)."""
    from flowstage.testing import LiveServer

    with tempfile.TemporaryDirectory(prefix="flowstage-live-") as data_dir:
        server = LiveServer(stage_settings(StageOptions(), Path(data_dir)))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def flowstage_live(flowstage_live_server: LiveServer, request: pytest.FixtureRequest) -> LiveServer:
    """The session's live server, reset for this test (the marker's time and seed apply)."""
    options = stage_options(request)
    if options.time == "realtime" or options.settings or options.speed != 1.0:
        raise pytest.UsageError("flowstage_live is shared by the session: only seed= and time='manual'|"
                                "'autojump' apply to it")
    flowstage_live_server.reset(options.time, options.seed)
    return flowstage_live_server
