"""The baseline for bench/api_execute.py: a bare aiohttp + msgspec POST handler that decodes
the JSON body and answers 202 with a JSON body of the same size as Flowstage's Run answer,
encoded on every request. No middleware, no engine, no store. It listens with the backlog of
`flowstage serve` (4,096), so that a storm of connections meets the same kernel queue.

Usage: python bench/_bare_execute.py PORT BODY_FILE
"""

import sys
from pathlib import Path

import msgspec
from aiohttp import web

port, body_file = int(sys.argv[1]), sys.argv[2]
document = msgspec.json.decode(Path(body_file).read_bytes())
encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(dict)


async def handler(request: web.Request) -> web.Response:
    decoder.decode(await request.read())
    return web.Response(body=encoder.encode(document), status=202, content_type="application/json",
                        headers={"ETag": '"1"', "Location": "/api/runs/x"})


app = web.Application()
app.router.add_post("/api/workflows/{id}/execute", handler)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)
