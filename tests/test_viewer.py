"""The run viewer at `/`, driven in a real browser: Debian's Chromium through Playwright, nothing
downloaded. A user opens a workflow, executes it and watches every node finish; pauses and sees
the states hold; loses the stream and sees the page recover; and a 200-node workflow keeps its
frames short while its run streams. The selectors are the testing contract of docs/viewer.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import make_settings
from playwright.async_api import Page, async_playwright

from flowstage.server.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
WAIT_MS = 15_000  # how long a wait for a state may last before the test fails as hung
ServerFactory = Callable[..., Any]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"Chromium is needed for the viewer tests and is not at {CHROMIUM}: "
                           "apt-get install chromium (.ci/run does)")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def node(node_id: str, node_type: str, x: int, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "position": {"x": x, "y": 40}, "data": {"config": config}}


def chain(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": "Viewer test", "nodes": list(nodes), "connections": [
        {"id": f"c{i}", "source": a["id"], "target": b["id"]} for i, (a, b) in enumerate(pairwise(nodes))]}


@pytest.fixture
async def server(aiohttp_server: ServerFactory, tmp_path: Path) -> TestServer:
    started: TestServer = await aiohttp_server(create_app(make_settings(tmp_path)))
    return started


@pytest.fixture
async def page(server: TestServer) -> AsyncIterator[Page]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                          env={**os.environ, "HOME": str(Path.home())})
        try:
            opened = await browser.new_page(viewport={"width": 1400, "height": 900})
            opened.set_default_timeout(WAIT_MS)
            yield opened
        finally:
            await browser.close()


async def create(server: TestServer, body: dict[str, Any]) -> str:
    async with aiohttp.ClientSession() as session, session.post(server.make_url("/api/workflows"), json=body) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def open_workflow(page: Page, server: TestServer, workflow_id: str) -> None:
    await page.goto(str(server.make_url("/")))
    await page.click(f'[data-workflow-id="{workflow_id}"] button')
    await page.wait_for_selector('#stream-status[data-stream="live"]')


async def states(page: Page) -> dict[str, str]:
    found: dict[str, str] = await page.eval_on_selector_all(
        "[data-node-id]", "els => Object.fromEntries(els.map(e => [e.dataset.nodeId, e.dataset.state]))")
    return found


async def test_a_run_executed_from_the_page_shows_every_node_completed(page: Page, server: TestServer) -> None:
    wf = await create(server, chain(node("t", "manual_trigger", 0), node("a", "transform", 220),
                                    node("b", "transform", 440), node("o", "output", 660)))
    await open_workflow(page, server, wf)
    assert await states(page) == {"t": "idle", "a": "idle", "b": "idle", "o": "idle"}
    assert await page.get_attribute("[data-edge-id=c0]", "data-edge-id") == "c0"
    await page.fill("#speed", "20")
    await page.click('[data-action="execute"]')
    await page.wait_for_selector('[data-run-state="completed"]')
    assert await states(page) == {"t": "completed", "a": "completed", "b": "completed", "o": "completed"}
    # Each edge shows the items that crossed it, as the dataflow endpoint counts them.
    async with aiohttp.ClientSession() as session, \
            session.get(server.make_url(f"/api/workflows/{wf}/dataflow")) as resp:
        flows = (await resp.json())["edges"]
    for flow in flows:
        n = flow["items"]
        assert await page.text_content(f'[data-edge-id="{flow["connectionId"]}"] text') == \
            f"{n} item{'' if n == 1 else 's'}"
    # Each state is also written as text, not shown by colour alone.
    assert await page.text_content('[data-node-id="o"] .state-label') == "completed"


# Sets window.stateWhenPaused: a promise of the node's state when the badge first says paused.
_WATCH_PAUSE = """(nodeId) => {
  window.stateWhenPaused = new Promise((resolve) => {
    const badge = document.querySelector("#run-badge");
    new MutationObserver((_, observer) => {
      if (badge.dataset.runState === "paused") {
        observer.disconnect();
        resolve(document.querySelector(`[data-node-id="${nodeId}"]`).dataset.state);
      }
    }).observe(badge, { attributes: true });
  });
}"""


async def test_pause_holds_the_states_until_resume(page: Page, server: TestServer) -> None:
    wf = await create(server, chain(node("t", "manual_trigger", 0), node("d", "delay", 220, ms=3_000_000),
                                    node("o", "output", 440)))
    await open_workflow(page, server, wf)
    await page.click('[data-action="execute"]')
    await page.wait_for_selector('[data-node-id="d"][data-state="running"]')
    # What node d shows at the moment the badge first says paused: the badge and the nodes
    # change together, whether the control's answer or the event (a batch later) comes first.
    await page.evaluate(_WATCH_PAUSE, "d")
    await page.click('[data-action="pause"]')
    assert await page.evaluate("window.stateWhenPaused") == "paused"
    held = await states(page)
    assert held == {"t": "completed", "d": "paused", "o": "idle"}
    await page.wait_for_timeout(500)
    assert await states(page) == held
    assert await page.is_enabled('[data-action="resume"]') and not await page.is_enabled('[data-action="pause"]')
    await page.click('[data-action="resume"]')
    await page.wait_for_selector('[data-node-id="d"][data-state="running"]')
    await page.click('[data-action="stop"]')
    await page.wait_for_selector('[data-run-state="stopped"]')
    await page.wait_for_selector('[data-node-id="o"][data-state="skipped"]')
    assert await states(page) == {"t": "completed", "d": "stopped", "o": "skipped"}


class CuttingProxy:
    """A TCP relay between the browser and the server that can cut every connection at once,
    as a network drop does, and then goes on accepting new ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_a_cut_stream_is_resumed_and_the_page_ends_with_the_right_states(
    page: Page, server: TestServer
) -> None:
    wf = await create(server, chain(node("t", "manual_trigger", 0), node("d", "delay", 220, ms=1500),
                                    node("o", "output", 440)))
    proxy = CuttingProxy(server.port or 0)
    port = await proxy.start()
    try:
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.click(f'[data-workflow-id="{wf}"] button')
        await page.wait_for_selector('#stream-status[data-stream="live"]')
        await page.click('[data-action="execute"]')
        await page.wait_for_selector('[data-node-id="d"][data-state="running"]')
        proxy.cut()  # the stream drops while the run goes on
        await page.wait_for_selector('#stream-status[data-stream="reconnecting"]')
        # The browser reconnects by itself with Last-Event-ID; the run has ended meanwhile.
        await page.wait_for_selector('#stream-status[data-stream="live"]')
        await page.wait_for_selector('[data-run-state="completed"]')
        assert await states(page) == {"t": "completed", "d": "completed", "o": "completed"}
    finally:
        await proxy.close()


async def test_a_200_node_workflow_renders_and_its_live_frames_stay_short(page: Page, server: TestServer) -> None:
    nodes = [node("n0", "manual_trigger", 0)] + [
        {**node(f"n{i}", "transform", 220 * (i % 20)), "position": {"x": 220 * (i % 20), "y": 100 * (i // 20)}}
        for i in range(1, 199)] + [node("n199", "output", 220 * 19)]
    nodes[-1]["position"] = {"x": 220 * 19, "y": 1000}
    # Ten chains of twenty nodes from the trigger: wide enough that many nodes change at once.
    connections = [{"id": f"s{i}", "source": "n0", "target": f"n{i}"} for i in range(1, 199, 20)]
    connections += [{"id": f"c{i}", "source": f"n{i}", "target": f"n{i + 1}"}
                    for i in range(1, 198) if i % 20 != 0 and i + 1 < 199]
    connections += [{"id": f"e{i}", "source": f"n{i}", "target": "n199"}
                    for i in range(19, 199, 20) if i < 199]
    wf = await create(server, {"name": "Two hundred", "nodes": nodes, "connections": connections})
    await open_workflow(page, server, wf)
    assert await page.locator("[data-node-id]").count() == 200
    assert await page.locator("[data-edge-id]").count() == len(connections)
    await page.fill("#speed", "1")  # about 1.5 s of streaming, ~1,000 events a second: ten chains of 20
    await page.click('[data-action="execute"]')
    await page.wait_for_selector('[data-state="running"]')
    # While the run streams: the browser's own account of slow frames (a long animation frame is
    # one whose work, script, style, layout and paint, took 50 ms or more), and the intervals
    # between frames, for the report.
    await page.evaluate("""() => {
        window.long_frames = []; window.frames_ms = []; let last = performance.now();
        new PerformanceObserver((list) => { for (const e of list.getEntries()) window.long_frames.push(e.duration); })
            .observe({ type: "long-animation-frame" });
        const tick = (now) => { window.frames_ms.push(now - last); last = now;
                                if (!window.stop_frames) requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""")
    await page.wait_for_selector('[data-run-state="completed"]', timeout=60_000)
    frames: list[float] = await page.evaluate("() => { window.stop_frames = true; return window.frames_ms.slice(1); }")
    long_frames: list[float] = await page.evaluate("() => window.long_frames")
    assert len(frames) > 20
    print(f"frames: {len(frames)}, longest interval {max(frames):.1f} ms, long animation frames {long_frames}")
    assert long_frames == [], f"frames of {long_frames} ms while the run streamed"
    assert set((await states(page)).values()) == {"completed"}


async def test_a_breakpoint_set_in_the_inspector_pauses_the_run_and_history_replays_it(
    page: Page, server: TestServer
) -> None:
    wf = await create(server, chain(node("t", "manual_trigger", 0), node("a", "transform", 220),
                                    node("b", "transform", 440), node("o", "output", 660)))
    await open_workflow(page, server, wf)
    await page.click('[data-node-id="b"]')
    await page.check("#breakpoint")
    await page.fill("#speed", "20")
    await page.click('[data-action="execute"]')
    await page.wait_for_selector('[data-run-state="paused"]')
    assert await states(page) == {"t": "completed", "a": "completed", "b": "queued", "o": "idle"}
    await page.click('[data-action="step"]')  # b starts, and the run pauses again
    await page.wait_for_selector('[data-node-id="b"][data-state="paused"]')
    await page.click('[data-action="resume"]')
    await page.wait_for_selector('[data-run-state="completed"]')
    first = await page.text_content("#run-id")
    await page.wait_for_selector("#runs li")
    await page.click('[data-action="replay"]')
    await page.wait_for_selector("#runs li:nth-child(2)")
    await page.wait_for_selector('[data-run-state="completed"]')
    assert await page.text_content("#run-id") != first
    await page.click(f'#runs [data-run-id="{first}"] button')
    await page.wait_for_selector(f'#run-id:text-is("{first}")')  # no eval: the page's CSP forbids it
    assert await states(page) == {"t": "completed", "a": "completed", "b": "completed", "o": "completed"}


async def test_a_template_is_applied_and_a_dropped_image_shows_its_thumbnail(
    page: Page, server: TestServer, tmp_path: Path
) -> None:
    wf = await create(server, chain(node("t", "manual_trigger", 0), node("o", "output", 220)))
    async with aiohttp.ClientSession() as session, session.post(
            server.make_url("/api/templates"), json={"fromWorkflowId": wf, "name": "Two steps"}) as resp:
        assert resp.status == 201, await resp.text()
        template = (await resp.json())["id"]
    await page.goto(str(server.make_url("/")))
    await page.click(f'[data-template-id="{template}"] button')
    await page.wait_for_selector('#stream-status[data-stream="live"]')
    opened = await page.get_attribute('#workflows li:first-child', "data-workflow-id")
    assert opened not in (None, wf)
    assert await page.get_attribute(f'[data-workflow-id="{opened}"] button', "aria-current") == "true"
    assert list((await states(page)).values()) == ["idle", "idle"]  # the template's two nodes, new ids

    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 32), "red").save(picture)
    await page.set_input_files("#file-input", str(picture))
    thumbnail = page.locator('#files img[alt="red.png"]')
    await thumbnail.wait_for()
    assert await thumbnail.evaluate("img => img.complete && img.naturalWidth > 0")
