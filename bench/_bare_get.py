"""The baseline for bench/api_get.py: a bare aiohttp + msgspec handler answering GET with a JSON
body of the same size as Flowstage's workflow, encoded on every request. No middleware, no store.

Usage: python bench/_bare_get.py PORT BODY_FILE
"""

import sys
from pathlib import Path

import msgspec
from aiohttp import web

port, body_file = int(sys.argv[1]), sys.argv[2]
document = msgspec.json.decode(Path(body_file).read_bytes())
encoder = msgspec.json.Encoder()


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=encoder.encode(document), content_type="application/json",
                        headers={"ETag": '"1"'})


app = web.Application()
app.router.add_get("/api/workflows/{id}", handler)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
