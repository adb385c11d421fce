"""Files: streamed multipart upload, metadata and thumbnails from the bytes, download.

Each part named `file` is streamed to `files/tmp/` under a server-made name, counting bytes as
they arrive; past `max_upload_bytes` reading stops and the answer is 413 with nothing left
behind. Every part of a request is inspected before any is committed, so an upload request
stores all of its files or none.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import quote

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from flowstage.server.http import etag_response, json_response, page_params
from flowstage.server.keys import NOW, SETTINGS, STORE
from flowstage.server.openapi import Param, Route
from flowstage.server.routes.workflows import IF_MATCH, IF_NONE_MATCH, LIST_PARAMS
from flowstage.server.store import Page, new_id
from flowstage.server.store.files import StagedFile
from flowstage.simulation.errors import FieldError, NotFound, PayloadTooLarge
from flowstage.simulation.filenames import sanitise_name
from flowstage.simulation.image_decoding import CorruptFile
from flowstage.simulation.inspection import Inspection, Kind, inspect_file, sha256_file
from flowstage.simulation.models import FileInfo
from flowstage.simulation.timefmt import iso_ms

__all__ = ["ROUTES", "FileList"]

_CHUNK = 256 * 1024


class FileList(msgspec.Struct, frozen=True):
    items: list[FileInfo]


async def _stream_part(part: BodyPartReader, tmp: Path, budget: int) -> int:
    """Write one part to `tmp`; returns its size. Raises PayloadTooLarge past `budget`."""
    size = 0
    with tmp.open("wb") as out:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > budget:
                raise PayloadTooLarge("The upload is larger than this server accepts.")
            # A buffered write of a chunk lands in the page cache in microseconds; handing each
            # one to a thread cost more than it saved (bench/files.py).
            out.write(chunk)
    return size


def _examine(path: Path) -> tuple[str, Inspection]:
    """Hash and inspect a stored upload: CPU work, run on a worker thread."""
    return sha256_file(path), inspect_file(path)


async def upload_files(request: web.Request) -> web.Response:
    settings, store, now = request.app[SETTINGS], request.app[STORE], request.app[NOW]
    if request.content_type != "multipart/form-data":
        raise web.HTTPUnsupportedMediaType(text="Send files as multipart/form-data parts named 'file'.")
    tmp_paths: list[Path] = []
    staged: list[StagedFile] = []
    budget = settings.max_upload_bytes
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name != "file":
                    continue  # other form fields are not ours to keep
                tmp = store.files.tmp_dir / secrets.token_hex(16)
                tmp_paths.append(tmp)
                size = await _stream_part(part, tmp, budget)
                budget -= size
                try:
                    sha, inspection = await asyncio.to_thread(_examine, tmp)
                except CorruptFile as exc:  # located at its part, for the editor to show by the file
                    name = sanitise_name(part.filename)
                    raise CorruptFile(f"{name}: {exc.detail}",
                                      [FieldError(["body", "file", len(staged)], exc.detail)]) from None
                file_id = new_id("file")
                info = FileInfo(
                    id=file_id, name=sanitise_name(part.filename), size=size,
                    mime_type=inspection.mime_type, sha256=sha, created_at=iso_ms(now()),
                    metadata=inspection.metadata, content_url=f"/api/files/{file_id}/content",
                    thumbnail_url=f"/api/files/{file_id}/thumbnail" if inspection.thumbnail else None,
                )
                staged.append(StagedFile(info=info, kind=inspection.kind, tmp_path=str(tmp),
                                         thumbnail=inspection.thumbnail))
        except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
            # aiohttp's multipart reader reports a broken body with these.
            raise web.HTTPBadRequest(text=f"The multipart body could not be read: {exc}") from None
        if not staged:
            raise web.HTTPBadRequest(text="The upload has no part named 'file'.")
        await store.files.commit(staged)
    finally:
        for tmp in tmp_paths:  # committed ones were moved away already
            tmp.unlink(missing_ok=True)
    return json_response(FileList(items=[s.info for s in staged]), 201)


async def list_files(request: web.Request) -> web.Response:
    limit, cursor = page_params(request)
    page = await request.app[STORE].files.list(
        limit, cursor, request.query.get("kind"), request.query.get("mimeType"))
    return json_response(page)


async def get_file(request: web.Request) -> web.Response:
    info = await request.app[STORE].files.get(request.match_info["id"])
    # A file never changes: its content hash names its representation too.
    return etag_response(request, msgspec.json.encode(info), f'"{info.sha256}"')


async def delete_file(request: web.Request) -> web.Response:
    await request.app[STORE].files.delete(request.match_info["id"], request.headers.get("If-Match"))
    return web.Response(status=204)


def _disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def file_content(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    info = await store.files.get(request.match_info["id"])
    inline = info.mime_type.startswith("image/") or info.mime_type == "text/plain"
    return web.FileResponse(store.files.blob_path(info.sha256), headers={
        "Content-Type": info.mime_type,
        "Content-Disposition": _disposition("inline" if inline else "attachment", info.name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=3600",
    })


async def file_thumbnail(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    info = await store.files.get(request.match_info["id"])
    if info.thumbnail_url is None:
        raise NotFound(f"File {info.id!r} is not an image and has no thumbnail.")
    return web.FileResponse(store.files.thumb_path(info.sha256), headers={
        "Content-Type": "image/webp",
        "X-Content-Type-Options": "nosniff",
        # Thumbnails are named by the content's hash: they never change.
        "Cache-Control": "public, max-age=31536000, immutable",
    })


_MULTIPART = {"multipart/form-data": {
    "type": "object",
    "properties": {"file": {
        "type": "string", "format": "binary",
        "description": "A file. Repeat the part to upload several in one request (all or none "
        "are stored); parts with other names are ignored.",
    }},
    "required": ["file"],
    # A part's name sits in a header, where control characters make the body unreadable (400);
    # tab, CR and LF are the ones clients escape.
    "propertyNames": {"pattern": "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$"},
}}
# OpenAPI 3.1 spells "any bytes" as a media type without a schema: the content is the file as
# uploaded, whatever it is (its Content-Type is the file's mimeType), never read as JSON.
_BINARY = {"*/*": None}

ROUTES = (
    Route("POST", "/api/files/upload", upload_files, "Upload one or more files (parts named 'file')",
          "files", operation_id="uploadFiles", creates="/api/files/{id}",
          created_id="$response.body#/items/0/id", response=FileList, status=201,
          body_content=_MULTIPART, errors=(400, 413, 415, 422)),
    Route("GET", "/api/files", list_files, "List files, newest first", "files",
          operation_id="listFiles", response=Page[FileInfo],
          query=(*LIST_PARAMS[:2],
                 Param("kind", "image, csv, json, text or binary",
                       Kind),
                 Param("mimeType", "Only files of this detected MIME type"))),
    Route("GET", "/api/files/{id}", get_file, "A file's metadata", "files", operation_id="getFile",
          response=FileInfo, errors=(304, 404)),
    Route("DELETE", "/api/files/{id}", delete_file, "Delete a file (its bytes go with the last "
          "file that shares them)", "files", operation_id="deleteFile", status=204,
          headers=IF_MATCH, errors=(404, 412)),
    Route("GET", "/api/files/{id}/content", file_content, "The file's bytes, as uploaded", "files",
          operation_id="getFileContent", response_content=_BINARY, headers=IF_NONE_MATCH, errors=(304, 404)),
    Route("GET", "/api/files/{id}/thumbnail", file_thumbnail,
          "A WebP thumbnail (longest side at most 256 px); images only", "files",
          operation_id="getFileThumbnail", response_content={"image/webp": None}, headers=IF_NONE_MATCH,
          errors=(304, 404)),
)
