"""The baseline for bench/files.py: a bare aiohttp handler that streams each multipart part
to disk and nothing else (no hashing, no inspection, no database).

Usage: python bench/_bare_upload.py PORT DIR
"""

import secrets
import sys
from pathlib import Path

from aiohttp import web

port, target = int(sys.argv[1]), Path(sys.argv[2])
target.mkdir(parents=True, exist_ok=True)


async def upload(request: web.Request) -> web.Response:
    reader = await request.multipart()
    count = 0
    while (part := await reader.next()) is not None:
        with (target / secrets.token_hex(8)).open("wb") as out:
            while chunk := await part.read_chunk(256 * 1024):  # type: ignore[union-attr]
                out.write(chunk)
        count += 1
    return web.json_response({"files": count}, status=201)


app = web.Application()
app.router.add_post("/api/files/upload", upload)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
