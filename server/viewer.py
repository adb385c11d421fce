"""The run viewer at `/`: plain ES modules, SVG and CSS shipped inside the package
(`server/static/viewer/`) and served as they are, with no build step and nothing fetched from
elsewhere (its Content-Security-Policy allows this origin only). The page itself uses only the
public HTTP API and SSE streams; docs/viewer.md says what it shows."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from flowstage.server.http import content_etag, not_modified
from flowstage.server.keys import EDGE
from flowstage.simulation.errors import NotFound

__all__ = ["add_viewer_routes"]

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_HEADERS = {
    # Revalidate every time (an ETag makes that a 304): an upgraded server's page shows at once.
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _assets() -> dict[str, tuple[bytes, str, str]]:
    """Every file of the viewer, read once: name -> (body, content type, ETag)."""
    found: dict[str, tuple[bytes, str, str]] = {}
    for entry in (files("flowstage.server") / "static" / "viewer").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            found[entry.name] = (body, _TYPES[suffix], content_etag(body))
    return found


def add_viewer_routes(app: web.Application) -> None:
    """`GET /` (the page) and `GET /viewer/{name}` (its modules and style)."""
    assets = _assets()

    def answer(request: web.Request, name: str) -> web.Response:
        found = assets.get(name)
        if found is None:
            raise NotFound(f"No viewer file {name!r}.")
        body, content_type, etag = found
        headers = {**_HEADERS, "ETag": etag}
        if not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def index(request: web.Request) -> web.Response:
        return answer(request, "index.html")

    async def asset(request: web.Request) -> web.Response:
        return answer(request, request.match_info["name"])

    edge = app[EDGE]
    edge.add_get(app.router, "/", index)
    edge.add_get(app.router, "/viewer/{name}", asset)
