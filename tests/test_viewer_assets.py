"""The viewer's files as the server hands them out (the browser tests are tests/test_viewer.py):
the page at `/`, its modules under `/viewer/`, revalidated by ETag, nothing else."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[Any, web.Application]


async def test_the_page_and_its_modules_are_served_from_this_origin_only(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert '<script type="module" src="/viewer/main.js"></script>' in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    modules = ("main.js", "canvas.js", "live.js", "api.js", "library.js")
    for name, content_type in (*((m, "text/javascript") for m in modules), ("viewer.css", "text/css")):
        resp = await client.get(f"/viewer/{name}")
        assert (resp.status, resp.content_type) == (200, content_type), name
        # Nothing from elsewhere: the only absolute URL is SVG's namespace name, never fetched.
        text = (await resp.text()).replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


async def test_an_unchanged_file_is_a_304_and_an_unknown_one_a_404_problem(client: Client) -> None:
    first = await client.get("/viewer/main.js")
    again = await client.get("/viewer/main.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    for path in ("/viewer/nope.js", "/viewer/..%2Fviewer.py", "/viewer/index"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "application/problem+json"
