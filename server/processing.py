"""Real work for the nodes that read uploaded files.

A file node learns its files one way: a `process-files` run
(`POST /api/workflows/{id}/nodes/{nodeId}/process-files`) names them in the run inputs
(`{"fileIds": [...], "files": [...]}`), an ordinary run in the node's config
(`config.fileIds`). For those files the handlers registered here do real work, off the event
loop:

- the image nodes (resize, thumbnail, convert) transform each image with Pillow and store every
  result as a new file, listed in the node's output;
- `csv_parse` and `json_parse` read each file's real bytes and output what they hold (the
  rows, the value). One file in an ordinary run: the parsed content is the output; several
  files, or any process-files run: `{"files": [{"sourceFileId", "name", "result"}], "count"}`.
  A file that is not UTF-8 CSV/JSON, is too large or was deleted fails that node.

Other node types keep their simulated work, once per file in a process-files run. A node that
names no files keeps its mock output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import msgspec

from flowstage.actors.engine import Engine
from flowstage.server.store import Store, new_id
from flowstage.simulation.catalogue import CATALOGUE
from flowstage.simulation.errors import FieldError, Invalid, NotFound
from flowstage.simulation.images import convert_image, resize_image, thumbnail_image
from flowstage.simulation.inspection import inspect_file
from flowstage.simulation.messages import no_such
from flowstage.simulation.models import FileInfo
from flowstage.simulation.outputs import GENERATORS, NodeContext
from flowstage.simulation.parsing import MAX_PARSED_BYTES, parse_csv, parse_json
from flowstage.simulation.timefmt import iso_ms

__all__ = ["IMAGE_TYPES", "PARSE_TYPES", "files_for_run", "register_file_handlers"]

IMAGE_TYPES = ("image_resize", "image_thumbnail", "image_convert")
PARSE_TYPES = ("csv_parse", "json_parse")
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}

# A parser: (blob, how messages name the file, bytes of output left) -> the parsed content.
_Parser = Callable[[Path, str, int], Any]


def _transform(node_type: str, config: dict[str, Any]) -> Callable[[Path], tuple[bytes, str]]:
    defaults = CATALOGUE[node_type].defaults
    cfg = {**defaults, **config}
    if node_type == "image_resize":
        return lambda src: resize_image(src, int(cfg["width"]), int(cfg["height"]))
    if node_type == "image_thumbnail":
        return lambda src: thumbnail_image(src, int(cfg["size"]))
    return lambda src: convert_image(src, str(cfg["format"]), int(cfg.get("quality", 90)))


def _parser(node_type: str, config: dict[str, Any]) -> _Parser:
    if node_type == "json_parse":
        return lambda src, name, left: parse_json(src, name=name, max_bytes=left)
    cfg = {**CATALOGUE[node_type].defaults, **config}
    delimiter, has_header = str(cfg["delimiter"]), bool(cfg["hasHeader"])
    return lambda src, name, left: parse_csv(src, delimiter=delimiter, has_header=has_header,
                                             name=name, max_bytes=left)


def _result_name(source: FileInfo, node_type: str, fmt: str) -> str:
    stem = PurePath(source.name).stem or "image"
    suffix = {"image_resize": "resized", "image_thumbnail": "thumb", "image_convert": "converted"}[node_type]
    return f"{stem}-{suffix}.{_EXTENSIONS.get(fmt, fmt.lower())}"


def _file_ids(ctx: NodeContext) -> list[str]:
    """The files a node works on: a process-files run names them in its inputs, an ordinary
    run in the node's config; none means simulated work."""
    file_ids = ctx.run_inputs.get("fileIds") or ctx.config.get("fileIds")
    return [str(f) for f in file_ids] if isinstance(file_ids, list) else []


def _read(parse: _Parser, blob: Path, source: FileInfo, left: int) -> tuple[Any, int]:
    """Parse one stored file (in a worker thread); the content and its size as JSON."""
    try:
        content = parse(blob, f"{source.name!r} ({source.id})", left)
    except FileNotFoundError:
        # Deleted between the lookup and the read: the same message as a file deleted before.
        raise NotFound(no_such("file", source.id)) from None
    return content, len(msgspec.json.encode(content))


async def files_for_run(store: Store, file_ids: list[str]) -> list[FileInfo]:
    """The files a process-files run will work on; 422 naming every unknown id, before the
    run starts."""
    known = await store.files.get_many(file_ids)
    errors = [FieldError(("body", "fileIds", i), f"no file with id {fid!r}")
              for i, fid in enumerate(file_ids) if fid not in known]
    if errors:
        raise Invalid(errors[0].msg if len(errors) == 1 else f"{len(errors)} unknown files", errors)
    return [known[fid] for fid in file_ids]


def register_file_handlers(engine: Engine, store: Store) -> None:
    """Serve the image and parsing node types with real work on the files they name."""

    async def process(ctx: NodeContext) -> Any:
        file_ids = _file_ids(ctx)
        if not file_ids:
            return GENERATORS[ctx.type](ctx)  # no files: simulated output
        transform = _transform(ctx.type, dict(ctx.config))
        results: list[dict[str, Any]] = []
        for file_id in file_ids:
            # A file deleted after the run started fails this node with NotFound's message.
            source = await store.files.get(file_id)
            data, fmt = await asyncio.to_thread(transform, store.files.blob_path(source.sha256))
            made = await store.files.add_bytes(
                data, _result_name(source, ctx.type, fmt), iso_ms(ctx.now), new_id("file"),
                inspect_file)
            results.append({"sourceFileId": source.id, "fileId": made.id, "name": made.name,
                            "mimeType": made.mime_type, "size": made.size,
                            "width": made.metadata.get("width"), "height": made.metadata.get("height"),
                            "contentUrl": made.content_url})
        return {"files": results, "count": len(results)}

    async def parse(ctx: NodeContext) -> Any:
        file_ids = _file_ids(ctx)
        if not file_ids:
            return GENERATORS[ctx.type](ctx)  # no files: today's mock output
        parser = _parser(ctx.type, dict(ctx.config))
        # One budget for the whole output, which travels in one event: later files get what
        # earlier ones left (fewer CSV rows shown; a JSON file that no longer fits fails).
        left = MAX_PARSED_BYTES
        results: list[dict[str, Any]] = []
        for file_id in file_ids:
            source = await store.files.get(file_id)
            content, size = await asyncio.to_thread(
                _read, parser, store.files.blob_path(source.sha256), source, left)
            left = max(0, left - size)
            results.append({"sourceFileId": source.id, "name": source.name, "result": content})
        if len(results) == 1 and not isinstance(ctx.run_inputs.get("files"), list):
            return results[0]["result"]
        return {"files": results, "count": len(results)}

    for node_type in IMAGE_TYPES:
        engine.handlers.register(node_type, process)
    for node_type in PARSE_TYPES:
        engine.handlers.register(node_type, parse)
    for node_type, generator in GENERATORS.items():
        if node_type not in IMAGE_TYPES and node_type not in PARSE_TYPES:
            engine.handlers.register(node_type, _per_file(generator))


def _per_file(generator: Callable[[NodeContext], Any]) -> Callable[[NodeContext], Any]:
    """Other node types simulate their work once per file in a process-files run (with the
    file's metadata, captured when the run started, as the input)."""

    def handler(ctx: NodeContext) -> Any:
        files = ctx.run_inputs.get("files")
        if not isinstance(files, list):
            return generator(ctx)
        results = []
        for info in files:
            per_file = NodeContext(ctx.run_id, ctx.workflow_id, ctx.node_id, ctx.type, ctx.config,
                                   [info], (), ctx.run_inputs, ctx.seed, ctx.now)
            results.append({"sourceFileId": info.get("id"), "name": info.get("name"),
                            "result": generator(per_file)})
        return {"files": results, "count": len(results)}

    return handler
