"""Takes the viewer screenshots in docs/ (viewer-*.png): a Flowstage server with the demo
workflows, Debian's Chromium driven by Playwright, the same as tests/test_viewer.py.

    .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

DOCS = Path(__file__).resolve().parent
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def shoot(base: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 760})
        await page.goto(base)
        entry = page.locator("[data-workflow-id]").first
        await entry.locator("button").click()
        await page.wait_for_selector('#stream-status[data-stream="live"]')
        await page.screenshot(path=str(DOCS / "viewer-workflow.png"))
        await page.fill("#speed", "2")
        await page.click('[data-action="execute"]')
        await page.wait_for_selector('[data-state="running"]')
        await page.wait_for_timeout(400)
        await page.screenshot(path=str(DOCS / "viewer-running.png"))
        await page.wait_for_selector("[data-run-state=completed], [data-run-state=failed]", timeout=60_000)
        await page.locator("[data-node-id]").last.click()
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(DOCS / "viewer-inspector.png"))
        await browser.close()


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "FLOWSTAGE_LOG_LEVEL": "warning"}
        server = subprocess.Popen([sys.executable, "-m", "flowstage", "serve", "--port", str(port),
                                   "--data-dir", data], env=env)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            asyncio.run(shoot(f"http://127.0.0.1:{port}/"))
        finally:
            server.terminate()
            server.wait()
    print("wrote", ", ".join(sorted(p.name for p in DOCS.glob("viewer-*.png"))))


if __name__ == "__main__":
    main()
