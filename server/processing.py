"""Real work for file nodes in `process-files` runs.

`POST /api/workflows/{id}/nodes/{nodeId}/process-files` starts a run of one node with the
run input `{"fileIds": [...]}`; in an ordinary run an image node works on the files its
config names (`config.fileIds`). For the image nodes (resize, thumbnail, convert) the handler
registered here really transforms each image with Pillow and stores every result as a new
file, listed in the node's output. Other node types keep their simulated work, once per file.
In ordinary workflow runs (no `fileIds`) every node type keeps its mock output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from flowstage.actors.engine import Engine
from flowstage.server.store import Store, new_id
from flowstage.simulation.catalogue import CATALOGUE
from flowstage.simulation.errors import FieldError, Invalid
from flowstage.simulation.files import convert_image, inspect_file, resize_image, thumbnail_image
from flowstage.simulation.models import FileInfo
from flowstage.simulation.outputs import GENERATORS, NodeContext
from flowstage.simulation.timefmt import iso_ms

__all__ = ["IMAGE_TYPES", "files_for_run", "register_file_handlers"]

IMAGE_TYPES = ("image_resize", "image_thumbnail", "image_convert")
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


def _transform(node_type: str, config: dict[str, Any]) -> Callable[[Path], tuple[bytes, str]]:
    defaults = CATALOGUE[node_type].defaults
    cfg = {**defaults, **config}
    if node_type == "image_resize":
        return lambda src: resize_image(src, int(cfg["width"]), int(cfg["height"]))
    if node_type == "image_thumbnail":
        return lambda src: thumbnail_image(src, int(cfg["size"]))
    return lambda src: convert_image(src, str(cfg["format"]), int(cfg.get("quality", 90)))


def _result_name(source: FileInfo, node_type: str, fmt: str) -> str:
    stem = PurePath(source.name).stem or "image"
    suffix = {"image_resize": "resized", "image_thumbnail": "thumb", "image_convert": "converted"}[node_type]
    return f"{stem}-{suffix}.{_EXTENSIONS.get(fmt, fmt.lower())}"


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
    """Serve the image node types with real Pillow work when a run carries `fileIds`."""

    async def process(ctx: NodeContext) -> Any:
        # process-files names the files in the run's inputs; a workflow run in the node's config.
        file_ids = ctx.run_inputs.get("fileIds") or ctx.config.get("fileIds")
        if not isinstance(file_ids, list) or not file_ids:
            return GENERATORS[ctx.type](ctx)  # no files: simulated output
        transform = _transform(ctx.type, dict(ctx.config))
        results: list[dict[str, Any]] = []
        for file_id in file_ids:
            # A file deleted after the run started fails this node with NotFound's message.
            source = await store.files.get(str(file_id))
            data, fmt = await asyncio.to_thread(transform, store.files.blob_path(source.sha256))
            made = await store.files.add_bytes(
                data, _result_name(source, ctx.type, fmt), iso_ms(ctx.now), new_id("file"),
                inspect_file)
            results.append({"sourceFileId": source.id, "fileId": made.id, "name": made.name,
                            "mimeType": made.mime_type, "size": made.size,
                            "width": made.metadata.get("width"), "height": made.metadata.get("height"),
                            "contentUrl": made.content_url})
        return {"files": results, "count": len(results)}

    for node_type in IMAGE_TYPES:
        engine.handlers.register(node_type, process)
    for node_type, generator in GENERATORS.items():
        if node_type not in IMAGE_TYPES:
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
