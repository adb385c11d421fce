"""What an uploaded file is, judged from its bytes (the client's file name and content type
are never trusted), and its content hash:

- images of an allow-listed format, decoded safely (simulation.image_decoding), with their
  size, format, frames and a WebP preview;
- UTF-8 text, refined into JSON (parses as a JSON document) or CSV (sniffs with one consistent
  delimiter);
- everything else is opaque binary.

Pure and synchronous: the server calls these from a worker thread, tests call them directly.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import mmap
import os
import re
from pathlib import Path
from typing import IO, Any, Final, Literal

import msgspec
from PIL import ImageFile

from flowstage.simulation.image_decoding import (
    DEFAULT_MAX_PIXELS,
    check_positive,
    count_frames,
    decode_errors,
    displayed_size,
    dpi_of,
    exif_orientation,
    image_mime,
    open_image,
    pillow_limits,
)
from flowstage.simulation.images import THUMBNAIL_MAX_SIDE, preview
from flowstage.simulation.parsing import READ_CHUNK_BYTES

__all__ = ["TEXT_SNIFF_BYTES", "Inspection", "Kind", "inspect_file", "sha256_file"]

# Sniffing looks at a bounded prefix so a 100 MiB upload costs one read of 1 MiB; only the row
# and line counts stream over the whole file.
TEXT_SNIFF_BYTES: Final = 1024 * 1024
# csv.Sniffer is quadratic-ish in practice; 64 KiB of whole lines is plenty to judge a dialect.
_CSV_SNIFF_CHARS: Final = 64 * 1024
_CSV_DELIMITERS: Final = ",;\t|"
# Documents that are often pure ASCII yet are not text anyone wants previewed as such.
_BINARY_SIGNATURES: Final = (b"%PDF-",)
# C0 controls other than tab, newline, form feed, carriage return and escape (ANSI colours)
# do not occur in text; more than 1% of them means binary that happens to be valid UTF-8.
_BINARY_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, lower-case hex, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


Kind = Literal["image", "csv", "json", "text", "binary"]


class Inspection(msgspec.Struct, frozen=True, kw_only=True):
    """What a file is: its MIME type, a coarse kind, camelCase metadata and, for images, a
    WebP thumbnail."""

    mime_type: str
    kind: Kind
    metadata: dict[str, Any]
    thumbnail: bytes | None = None


def inspect_file(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, with_thumbnail: bool = True
) -> Inspection:
    """Identify a stored file from its content; `thumbnail` is an image's WebP preview.

    Raises `ImageTooLarge` for an image over `max_pixels` and `CorruptFile` for bytes that
    claim an allowed image format but do not decode. Anything else that is not such an image
    is classified as JSON, CSV, text or binary, never rejected.
    """
    check_positive(max_pixels=max_pixels)
    with path.open("rb") as fh:
        with pillow_limits(max_pixels):
            img = open_image(fh, max_pixels)
            if img is not None:
                with img:
                    return _inspect_image(img, max_pixels, with_thumbnail=with_thumbnail)
        fh.seek(0)
        return _inspect_content(fh, path)


def _inspect_image(
    img: ImageFile.ImageFile, max_pixels: int, *, with_thumbnail: bool
) -> Inspection:
    fmt = img.format or "unknown"
    # Read before `draft`, which shrinks a JPEG's reported size.
    stored_size, mode = img.size, img.mode
    dpi = dpi_of(img.info.get("dpi"))
    with decode_errors(fmt):
        # A JPEG decoded at 1/8 scale still reads every byte, so truncation is still caught,
        # at a fraction of the memory. Only worth it when there is a thumbnail to make.
        if with_thumbnail and fmt in ("JPEG", "MPO"):
            img.draft(None, (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
        img.load()
        # After load: PNG may keep its eXIf chunk after the pixel data.
        orientation = exif_orientation(img)
        thumbnail = preview(img, orientation) if with_thumbnail else None
        frames = count_frames(img, max_pixels)
    width, height = displayed_size(stored_size, orientation)
    metadata: dict[str, Any] = {
        "width": width,
        "height": height,
        "format": fmt,
        "mode": mode,
        "frames": frames,
        "animated": frames > 1,
    }
    if dpi is not None:
        metadata["dpi"] = dpi
    if orientation is not None:
        metadata["orientation"] = orientation
    return Inspection(
        mime_type=image_mime(fmt), kind="image", metadata=metadata, thumbnail=thumbnail
    )


def _inspect_content(fh: IO[bytes], path: Path) -> Inspection:
    size = os.fstat(fh.fileno()).st_size
    prefix = fh.read(TEXT_SNIFF_BYTES)
    complete = len(prefix) >= size
    text = None if prefix.startswith(_BINARY_SIGNATURES) else _decode_text(prefix, complete)
    if text is None:
        return Inspection(mime_type="application/octet-stream", kind="binary", metadata={})
    bom = prefix.startswith(codecs.BOM_UTF8)
    json_shape = _json_shape(fh, text, size, complete=complete, bom=bom)
    if json_shape is not None:
        return Inspection(mime_type="application/json", kind="json", metadata=json_shape)
    csv_shape = _csv_shape(path, text, complete=complete)
    if csv_shape is not None:
        return Inspection(mime_type="text/csv", kind="csv", metadata=csv_shape)
    fh.seek(0)
    metadata = {"lines": _count_lines(fh), "encoding": "utf-8"}
    return Inspection(mime_type="text/plain", kind="text", metadata=metadata)


def _decode_text(prefix: bytes, complete: bool) -> str | None:
    """The prefix as text, or None when it is not UTF-8 text."""
    # Incremental, so a character split at the end of an incomplete prefix is not an error.
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        text = decoder.decode(prefix, final=complete)
    except UnicodeDecodeError:
        return None
    if "\x00" in text or len(_BINARY_CONTROLS.findall(text)) * 100 > len(text):
        return None
    return text


def _json_shape(
    fh: IO[bytes], text: str, size: int, *, complete: bool, bom: bool
) -> dict[str, Any] | None:
    head = text.lstrip()
    if not head or head[0] not in '{["-0123456789tfn':
        return None
    if not complete and head[0] not in "{[":
        # A bare scalar larger than the sniffing prefix is not a document anyone uploads.
        return None
    # JSON forbids a byte order mark, but editors on Windows write one; the text is still JSON.
    offset = len(codecs.BOM_UTF8) if bom else 0
    # Memory-mapped: a big non-JSON file fails on its first page, and a big JSON document is
    # validated without being read into (or materialised as) Python objects.
    with (
        mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ) as mapped,
        memoryview(mapped) as whole,
        whole[offset:] as body,
    ):
        try:
            if head[0] == "{":
                count = len(msgspec.json.decode(body, type=dict[str, msgspec.Raw]))
                return {"topLevelType": "object", "size": count}
            if head[0] == "[":
                count = len(msgspec.json.decode(body, type=list[msgspec.Raw]))
                return {"topLevelType": "array", "size": count}
            return {"topLevelType": _json_type_name(msgspec.json.decode(body))}
        except msgspec.DecodeError:
            return None


def _json_type_name(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case _:
            return "unknown"


class _FixedDialectSniffer(csv.Sniffer):
    """`csv.Sniffer.has_header` re-sniffs without our delimiter list and may pick another
    delimiter (`1,5;2,5` reads as comma-separated); this pins the dialect we already chose."""

    def __init__(self, dialect: type[csv.Dialect]) -> None:
        super().__init__()
        self._dialect = dialect

    def sniff(self, sample: str, delimiters: str | None = None) -> type[csv.Dialect]:
        del sample, delimiters  # the dialect was chosen already
        return self._dialect


def _csv_shape(path: Path, text: str, *, complete: bool) -> dict[str, Any] | None:
    sample = text[:_CSV_SNIFF_CHARS]
    if not complete or len(text) > _CSV_SNIFF_CHARS:
        # Only whole lines, so the last sampled row is not a fragment with fewer fields.
        sample = sample[: sample.rfind("\n") + 1]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=_CSV_DELIMITERS)
        if dialect.delimiter not in _CSV_DELIMITERS:
            return None
        rows = [row for row in csv.reader(io.StringIO(sample), dialect) if row]
    except csv.Error:
        return None
    # The sniffer guesses even for prose; a table has at least two rows and every row the
    # same number (at least two) of fields.
    widths = {len(row) for row in rows}
    if len(rows) < 2 or len(widths) != 1 or min(widths) < 2:
        return None
    try:
        has_header = _FixedDialectSniffer(dialect).has_header(sample)
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as stream:
            total = sum(1 for row in csv.reader(stream, dialect) if row)
    except csv.Error:
        # Consistent at the start but broken further on (an unclosed quote, a giant field):
        # not a table we can describe, so it is text.
        return None
    return {
        "delimiter": dialect.delimiter,
        "hasHeader": has_header,
        "rows": total - 1 if has_header else total,
        "columns": len(rows[0]),
        "encoding": "utf-8",
    }


def _count_lines(fh: IO[bytes]) -> int:
    lines, last = 0, b""
    while chunk := fh.read(READ_CHUNK_BYTES):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    # A final line without a newline is still a line.
    return lines + 1 if last not in (b"", b"\n") else lines

