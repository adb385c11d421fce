"""What an uploaded file is, judged from its bytes, and the work file nodes do on it: image
processing for the image nodes, parsing for `csv_parse` and `json_parse`.

Pure and synchronous (no asyncio, no aiohttp): the server calls these from a worker thread and
tests call them directly. The client's file name and content type are never trusted; a file's
type comes from its content:

- images of an allow-listed format, decoded by Pillow with a decompression-bomb limit and
  without ever accepting truncated data;
- UTF-8 text, refined into JSON (parses as a JSON document) or CSV (sniffs with one consistent
  delimiter);
- everything else is opaque binary.

`parse_csv` and `parse_json` read a file's real content for the parsing nodes, strictly (UTF-8,
well-formed) and bounded (a node's output travels in one event, so a large CSV yields its first
rows and a count of all of them).

`sanitise_name` turns the client's file name into something safe to display; the server never
uses it as a storage path.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import mmap
import os
import re
import struct
import threading
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final, Literal

import msgspec
from PIL import ExifTags, Image, ImageFile

from flowstage.simulation.errors import Invalid, PayloadTooLarge

__all__ = [
    "ALLOWED_IMAGE_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "MAX_NAME_CHARS",
    "MAX_PARSED_BYTES",
    "MAX_PARSED_ROWS",
    "TEXT_SNIFF_BYTES",
    "THUMBNAIL_MAX_SIDE",
    "CorruptFile",
    "FileTooLarge",
    "ImageTooLarge",
    "Inspection",
    "Kind",
    "MalformedFile",
    "convert_image",
    "inspect_file",
    "make_thumbnail",
    "parse_csv",
    "parse_json",
    "resize_image",
    "sanitise_name",
    "sha256_file",
    "thumbnail_image",
]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ImageTooLarge(PayloadTooLarge):
    """The image (or the work asked of it) exceeds the pixel limit: a decompression bomb."""


class CorruptFile(Invalid):
    """The bytes claim an image format, or were handed to an image node, but do not decode."""


class MalformedFile(Invalid):
    """A file handed to a parsing node is not the UTF-8 CSV or JSON that node reads."""


class FileTooLarge(PayloadTooLarge):
    """A file's parsed content cannot fit in one node output."""


# --------------------------------------------------------------------------------------------
# Limits and constants
# --------------------------------------------------------------------------------------------

# About 67 megapixels: every phone and most cameras fit (48 MP = 8064x6048), while the decoded
# RGBA buffer stays near 256 MiB. The server passes its configured value.
DEFAULT_MAX_PIXELS: Final = 64 * 1024 * 1024

# Formats we decode. Pillow can open dozens more (EPS runs Ghostscript, some have had parser
# CVEs); those are served as opaque binary instead.
ALLOWED_IMAGE_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

THUMBNAIL_MAX_SIDE: Final = 256
_THUMBNAIL_QUALITY: Final = 80

# Sniffing looks at a bounded prefix so a 100 MiB upload costs one read of 1 MiB; only the row
# and line counts stream over the whole file.
TEXT_SNIFF_BYTES: Final = 1024 * 1024
# csv.Sniffer is quadratic-ish in practice; 64 KiB of whole lines is plenty to judge a dialect.
_CSV_SNIFF_CHARS: Final = 64 * 1024
_CSV_DELIMITERS: Final = ",;\t|"
_STREAM_CHUNK: Final = 1024 * 1024

# A parsing node's output travels in one event and stays in the run's snapshot: at most this
# many CSV rows per file, and about this many bytes of file content in one node's output.
MAX_PARSED_ROWS: Final = 1000
MAX_PARSED_BYTES: Final = 1024 * 1024
# A CSV line longer than this is no table anyone wrote; splitting lines would hold it whole.
_MAX_LINE_CHARS: Final = 16 * 1024 * 1024

MAX_NAME_CHARS: Final = 200
# Longer "extensions" are just a dot in a long name; keeping them would eat the whole budget.
_MAX_EXTENSION_CHARS: Final = 16

# GIF frames can only be counted by decoding each one; a tiny file can declare thousands of
# full-screen frames, so the total decoded while counting is bounded too.
_FRAME_BUDGET_FACTOR: Final = 4

_UTF8_BOM: Final = codecs.BOM_UTF8
_MAGIC_BYTES: Final = 32
# BMP's magic is only "BM", which plain text can start with; the DIB header size narrows it.
_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
# Documents that are often pure ASCII yet are not text anyone wants previewed as such.
_BINARY_SIGNATURES: Final = (b"%PDF-",)
# C0 controls other than tab, newline, form feed, carriage return and escape (ANSI colours)
# do not occur in text; more than 1% of them means binary that happens to be valid UTF-8.
_BINARY_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")

# The transposition that shows an image upright for each EXIF orientation; the same table as
# PIL.ImageOps.exif_transpose. Applied here after resizing (cheaper than before) and from one
# orientation value read once, so reported sizes and pixels always agree, TIFF included.
_ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

# What Pillow raises for undecodable input (OSError covers "image file is truncated" and
# decoder errors; SyntaxError is Pillow's "not this format"/"broken PNG").
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_BOMB_ERRORS: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_FORMAT_ALIASES: Final = {"JPG": "JPEG", "TIF": "TIFF"}
# Formats that store an ICC profile; elsewhere it would be silently dropped (or rejected).
_ICC_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})


# --------------------------------------------------------------------------------------------
# Names and hashes
# --------------------------------------------------------------------------------------------

# Control (Cc), format (Cf: bidi overrides and isolates, zero-width characters, BOM),
# lone surrogates (Cs, which cannot even be encoded) and line/paragraph separators.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_PATH_SEPARATORS: Final = re.compile(r"[/\\]")
_EDGE_JUNK: Final = re.compile(r"^[\s.]+|[\s.]+$")


def sanitise_name(raw: str | None, *, fallback: str = "upload") -> str:
    """A display name for a client-supplied file name, or `fallback` when nothing is left.

    Keeps the last path component (a browser on Windows may send `C:\\dir\\a.txt`), drops
    invisible and direction-changing characters (so `"\\u202egnp.exe"` shows as the `.exe`
    it is), strips leading dots and spaces (no hidden files, no `..`) and trailing ones
    (Windows drops them), NFC-normalises, and keeps at most `MAX_NAME_CHARS` characters while
    preserving the extension.
    """
    if not raw:
        return fallback
    # Filter before splitting and normalising: a stray format character between a letter and
    # its accent would otherwise stop NFC from composing them.
    visible = "".join(ch for ch in raw if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    components = [part for part in _PATH_SEPARATORS.split(visible) if part]
    if not components:
        return fallback
    name = _EDGE_JUNK.sub("", unicodedata.normalize("NFC", components[-1]))
    return _bound_length(name) or fallback


def _bound_length(name: str) -> str:
    if len(name) <= MAX_NAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= _MAX_EXTENSION_CHARS:
        suffix = dot + extension
        # The stem starts with a visible character (edges were stripped), so it stays non-empty.
        return stem[: MAX_NAME_CHARS - len(suffix)].rstrip(". ") + suffix
    return name[:MAX_NAME_CHARS].rstrip(". ")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, lower-case hex, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------

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
    """Identify a stored file from its content.

    Raises `ImageTooLarge` for an image over `max_pixels` and `CorruptFile` for bytes that
    claim an allowed image format but do not decode. Anything else that is not such an image
    is classified as JSON, CSV, text or binary, never rejected.
    """
    _check_positive(max_pixels=max_pixels)
    with path.open("rb") as fh:
        with _pillow_limits(max_pixels):
            img = _open_image(fh, max_pixels)
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
    dpi = _dpi(img.info.get("dpi"))
    with _decode_errors(fmt):
        # A JPEG decoded at 1/8 scale still reads every byte, so truncation is still caught,
        # at a fraction of the memory. Only worth it when there is a thumbnail to make.
        if with_thumbnail and fmt in ("JPEG", "MPO"):
            img.draft(None, (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
        img.load()
        # After load: PNG may keep its eXIf chunk after the pixel data.
        orientation = _orientation(img)
        thumbnail = None
        if with_thumbnail:
            box = (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
            small = _render(img, orientation, box, upscale=False)
            thumbnail = _encode(small, "WEBP", _THUMBNAIL_QUALITY, icc=_icc_for(img, small))
        frames = _count_frames(img, max_pixels)
    width, height = _displayed_size(stored_size, orientation)
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
        mime_type=_image_mime(fmt), kind="image", metadata=metadata, thumbnail=thumbnail
    )


def _inspect_content(fh: IO[bytes], path: Path) -> Inspection:
    size = os.fstat(fh.fileno()).st_size
    prefix = fh.read(TEXT_SNIFF_BYTES)
    complete = len(prefix) >= size
    text = None if prefix.startswith(_BINARY_SIGNATURES) else _decode_text(prefix, complete)
    if text is None:
        return Inspection(mime_type="application/octet-stream", kind="binary", metadata={})
    bom = prefix.startswith(_UTF8_BOM)
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
    offset = len(_UTF8_BOM) if bom else 0
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
    while chunk := fh.read(_STREAM_CHUNK):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    # A final line without a newline is still a line.
    return lines + 1 if last not in (b"", b"\n") else lines


# --------------------------------------------------------------------------------------------
# Parsing: what csv_parse and json_parse output for an uploaded file
# --------------------------------------------------------------------------------------------


@contextmanager
def _opened(source: Path | IO[bytes]) -> Iterator[IO[bytes]]:
    if isinstance(source, Path):
        with source.open("rb") as fh:
            yield fh
    else:
        yield source


def parse_csv(
    source: Path | IO[bytes],
    *,
    delimiter: str = ",",
    has_header: bool = True,
    name: str = "the file",
    max_rows: int = MAX_PARSED_ROWS,
    max_bytes: int = MAX_PARSED_BYTES,
) -> dict[str, Any]:
    """A CSV file's records, read in one streaming pass.

    Returns `{"rows", "rowCount", "columns", "columnCount", "truncated"}`: with a header the
    rows are dicts keyed by its names (`columns`), without one lists (`columns` is None);
    every value stays the string it was. `rows` holds the first `max_rows` records, fewer if
    their text passes `max_bytes`; `rowCount` counts them all and `truncated` says whether
    some were left out. Blank lines are skipped. Raises `MalformedFile`, naming `name` and
    the line, for bytes that are not UTF-8, a broken quote, a record with another number of
    fields than the first, or a header naming a column twice.
    """
    header: list[str] | None = None
    width: int | None = None
    rows: list[Any] = []
    count = 0
    size = 0
    full = False
    with _opened(source) as fh:
        reader = csv.reader(_utf8_lines(fh, name), delimiter=delimiter, strict=True)
        try:
            for record in reader:
                if not record:
                    continue
                if width is None:
                    width = len(record)
                    if has_header:
                        header = _header(record, name)
                        continue
                elif len(record) != width:
                    first = "the header has" if header is not None else "the first record has"
                    raise MalformedFile(
                        f"{name} is not valid CSV: line {reader.line_num} has {len(record)} "
                        f"field(s); {first} {width}.")
                count += 1
                if full:
                    continue
                # Roughly what the row adds to the JSON output: its text and its punctuation.
                size += sum(len(field) + 3 for field in record)
                if len(rows) >= max_rows or size > max_bytes:
                    full = True
                    continue
                rows.append(dict(zip(header, record, strict=True)) if header is not None else record)
        except csv.Error as exc:
            raise MalformedFile(f"{name} is not valid CSV: line {reader.line_num}: {exc}.") from None
    return {
        "rows": rows,
        "rowCount": count,
        "columns": (header or []) if has_header else None,
        "columnCount": width or 0,
        "truncated": count > len(rows),
    }


def _header(record: list[str], name: str) -> list[str]:
    seen: set[str] = set()
    for column in record:
        if column in seen:
            # As dict keys, the later column would silently replace the earlier one.
            raise MalformedFile(f"{name} is not valid CSV: the header names the column {column!r} twice.")
        seen.add(column)
    return record


def _utf8_lines(fh: IO[bytes], name: str) -> Iterator[str]:
    """The file's text as lines, each with its "\n", decoded strictly in chunks.

    Split on "\n" only: the csv module takes each string it is given as a whole line, so a
    split anywhere else (str.splitlines splits on form feeds and U+2028) would cut records.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes handed to the decoder so far
    pending = ""
    lines = 0
    started = False
    while True:
        chunk = fh.read(_STREAM_CHUNK)
        held = len(decoder.getstate()[0])  # the start of a character split by the last chunk
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            at = offset - held + exc.start
            bad = exc.object[exc.start : exc.start + 1].hex()
            raise MalformedFile(f"{name} is not UTF-8 text: byte 0x{bad} at offset {at} does not decode.") from None
        offset += len(chunk)
        if not started and text:
            started = True
            text = text.removeprefix("\ufeff")  # editors on Windows start UTF-8 with a BOM
        pending += text
        parts = pending.split("\n")
        pending = parts.pop()
        for part in parts:
            lines += 1
            yield part + "\n"
        if len(pending) > _MAX_LINE_CHARS:
            raise MalformedFile(f"{name} is not valid CSV: line {lines + 1} is longer than "
                                f"{_MAX_LINE_CHARS} characters.")
        if not chunk:
            break
    if pending:
        yield pending


def parse_json(
    source: Path | IO[bytes], *, name: str = "the file", max_bytes: int = MAX_PARSED_BYTES
) -> Any:
    """A JSON file's value, decoded strictly (RFC 8259: no NaN, no trailing commas, one value).

    A leading UTF-8 BOM is allowed. Raises `FileTooLarge` for a file over `max_bytes` (its
    value would travel in one event) and `MalformedFile`, naming `name`, for bytes that are
    not UTF-8 or not one JSON value.
    """
    with _opened(source) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        limit = ("the most JSON a json_parse node outputs (its value travels in one event)"
                 if max_bytes >= MAX_PARSED_BYTES else
                 f"what the files before it left of the {MAX_PARSED_BYTES} bytes a json_parse node outputs")
        raise FileTooLarge(f"{name} is larger than {max_bytes} bytes, {limit}.")
    if data.startswith(_UTF8_BOM):
        # Blanked rather than cut, so the byte offsets in messages stay the file's own.
        data = b"   " + data[len(_UTF8_BOM) :]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise MalformedFile(f"{name} is not UTF-8 text: byte 0x{bad} at offset {exc.start} does not decode.") from None
    if not data.strip():
        raise MalformedFile(f"{name} is not valid JSON: it is empty.")
    try:
        return msgspec.json.decode(data)
    except msgspec.ValidationError as exc:  # a number past float's range: JSON allows it, we cannot
        raise MalformedFile(f"{name} holds JSON Flowstage cannot represent: {exc}.") from None
    except msgspec.DecodeError as exc:
        detail = str(exc).removeprefix("JSON is malformed: ")
        if detail == "Input data was truncated":
            detail = "it ends before its value does"
        raise MalformedFile(f"{name} is not valid JSON: {detail}.") from None
    except RecursionError:
        raise MalformedFile(f"{name} is not valid JSON for Flowstage: it nests too deeply.") from None


# --------------------------------------------------------------------------------------------
# Thumbnails and image processing
# --------------------------------------------------------------------------------------------


def make_thumbnail(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A WebP of the image shown upright (first frame), longest side at most 256 px, never
    enlarged. Raises `CorruptFile` for anything that is not a decodable allowed image."""
    box = (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
    with _decoded_image(path, max_pixels, draft_box=box) as (img, orientation):
        small = _render(img, orientation, box, upscale=False)
        return _encode(small, "WEBP", _THUMBNAIL_QUALITY, icc=_icc_for(img, small))


def resize_image(
    src: Path,
    width: int,
    height: int,
    *,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, str]:
    """The image scaled (up or down) to fit inside `width` x `height`, aspect ratio kept,
    shown upright; returns the encoded bytes and Pillow's format name (the source's)."""
    _check_positive(width=width, height=height)
    _check_quality(quality)
    if width * height > max_pixels:
        raise ImageTooLarge(f"A {width}x{height} box exceeds the limit of {max_pixels} pixels.")
    with _decoded_image(src, max_pixels, draft_box=(width, height)) as (img, orientation):
        fmt = _output_format(img.format)
        out = _render(img, orientation, (width, height), upscale=True)
        return _encode(out, fmt, quality, icc=_icc_for(img, out)), fmt


def thumbnail_image(
    src: Path, size: int, *, quality: int = 90, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """Like `resize_image` into a `size` square, but never enlarging: a file node's thumbnail,
    in the source's format (unlike the WebP preview `make_thumbnail` makes)."""
    _check_positive(size=size)
    _check_quality(quality)
    box = (size, size)
    with _decoded_image(src, max_pixels, draft_box=box) as (img, orientation):
        fmt = _output_format(img.format)
        out = _render(img, orientation, box, upscale=False)
        return _encode(out, fmt, quality, icc=_icc_for(img, out)), fmt


def convert_image(
    src: Path, fmt: str, quality: int = 90, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """The image (upright, first frame) re-encoded as `fmt`, one of `ALLOWED_IMAGE_FORMATS`
    (case-insensitive; `jpg` and `tif` accepted). `quality` (1-100) applies to JPEG and WEBP.
    Transparency becomes white in JPEG."""
    target = _FORMAT_ALIASES.get(fmt.upper(), fmt.upper())
    if target not in ALLOWED_IMAGE_FORMATS:
        allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
        raise Invalid(f"Cannot convert to {fmt!r}; the formats are {allowed}.")
    _check_quality(quality)
    with _decoded_image(src, max_pixels) as (img, orientation):
        out = _render(img, orientation, None, upscale=False)
        return _encode(out, target, quality, icc=_icc_for(img, out)), target


# --------------------------------------------------------------------------------------------
# Pillow plumbing
# --------------------------------------------------------------------------------------------

# Image.MAX_IMAGE_PIXELS and the warning filters are process-wide and the server decodes in
# worker threads, so decodes take turns. One image at a time also bounds the memory that
# decoding can take to one image of `max_pixels`. Re-entrant so helpers may nest.
_PILLOW_LOCK: Final = threading.RLock()


@contextmanager
def _pillow_limits(max_pixels: int) -> Iterator[None]:
    with _PILLOW_LOCK, warnings.catch_warnings():
        # Pillow only *warns* between 1x and 2x its limit; a warning is not a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow's other warnings (malformed EXIF or MPO headers) describe images it still
        # decodes; whether such a file is accepted must not depend on the warning filters.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


@contextmanager
def _decode_errors(fmt: str) -> Iterator[None]:
    try:
        yield
    except _BOMB_ERRORS as exc:
        raise ImageTooLarge(f"The {fmt} image is too large to decode safely: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptFile(f"The {fmt} image is corrupt or truncated: {exc}") from exc


def _open_image(fh: IO[bytes], max_pixels: int) -> ImageFile.ImageFile | None:
    """Open (header only) an image of an allowed format; None when the bytes neither are one
    nor claim to be one. Call with `_pillow_limits` held."""
    head = fh.read(_MAGIC_BYTES)
    fh.seek(0)
    claimed = _claimed_image_format(head)
    try:
        img = Image.open(fh, formats=ALLOWED_IMAGE_FORMATS)
    except _BOMB_ERRORS as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from exc
    except _DECODE_ERRORS as exc:
        if claimed is None:
            return None
        raise CorruptFile(
            # Not {exc}: Pillow's message names the server's temporary path.
            f"The file starts like a {claimed} image but cannot be decoded ({type(exc).__name__})."
        ) from exc
    width, height = img.size
    # Also enforced here, exactly, whatever the warning filters say.
    if width * height > max_pixels:
        img.close()
        raise ImageTooLarge(
            f"The image is {width}x{height} ({width * height} pixels); "
            f"the limit is {max_pixels} pixels."
        )
    return img


@contextmanager
def _decoded_image(
    path: Path, max_pixels: int, *, draft_box: tuple[int, int] | None = None
) -> Iterator[tuple[ImageFile.ImageFile, int | None]]:
    """A loaded allowed image (first frame) and its EXIF orientation, for processing."""
    _check_positive(max_pixels=max_pixels)
    with path.open("rb") as fh, _pillow_limits(max_pixels):
        img = _open_image(fh, max_pixels)
        if img is None:
            allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
            raise CorruptFile(f"The file is not an image in one of the formats {allowed}.")
        with img, _decode_errors(img.format or "unknown"):
            if draft_box is not None and img.format in ("JPEG", "MPO"):
                # Decoding at a smaller DCT scale: at least the box, whichever way it is turned.
                side = max(draft_box)
                img.draft(None, (side, side))
            img.load()
            yield img, _orientation(img)


def _claimed_image_format(head: bytes) -> str | None:
    """The allowed format the magic bytes announce, so a broken PNG is "corrupt", not binary."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "BMP"
    return None


def _orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation)
    except _DECODE_ERRORS:
        # Broken EXIF must not reject pixels that decode; the image is shown as stored.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _displayed_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    width, height = size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def _count_frames(img: ImageFile.ImageFile, max_pixels: int) -> int:
    if img.format != "GIF":
        # PNG (APNG), WebP, TIFF and MPO declare or index their frames without decoding them.
        return max(1, int(getattr(img, "n_frames", 1)))
    frame_pixels = img.size[0] * img.size[1]
    budget = _FRAME_BUDGET_FACTOR * max_pixels
    count = 1
    while True:
        try:
            img.seek(count)
        except EOFError:
            break
        count += 1
        if count * frame_pixels > budget:
            raise ImageTooLarge(
                f"The animation has more than {count - 1} frames of {img.size[0]}x"
                f"{img.size[1]}; decoding it would exceed {budget} pixels."
            )
    img.seek(0)
    return count


def _dpi(raw: object) -> list[float] | None:
    if not isinstance(raw, tuple) or len(raw) != 2:
        return None
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    # PNG stores pixels per metre, so 72 dpi comes back as 72.009; nobody means the 0.009.
    return [round(v, 1) for v in values]


def _image_mime(fmt: str) -> str:
    Image.init()
    return Image.MIME.get(fmt, "application/octet-stream")


def _output_format(source_format: str | None) -> str:
    if source_format == "MPO":
        # A multi-picture JPEG; only its first picture is processed.
        return "JPEG"
    Image.init()
    if source_format in ALLOWED_IMAGE_FORMATS and source_format in Image.SAVE:
        return source_format
    return "PNG"


def _fit(size: tuple[int, int], box: tuple[int, int], *, upscale: bool) -> tuple[int, int]:
    width, height = size
    scale = min(box[0] / width, box[1] / height)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _render(
    img: Image.Image,
    orientation: int | None,
    box: tuple[int, int] | None,
    *,
    upscale: bool,
) -> Image.Image:
    """The loaded first frame in a resizable mode, fitted into `box` as displayed, upright."""
    working = _working_mode(img)
    out = working
    if box is not None:
        width, height = _fit(_displayed_size(working.size, orientation), box, upscale=upscale)
        # Resize the stored pixels to the turned target, then turn the small result.
        stored_target = _displayed_size((width, height), orientation)
        if stored_target != working.size:
            # reducing_gap: a cheap integer reduction first, then Lanczos on the remainder.
            out = working.resize(stored_target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation or 1)
    if transpose is not None:
        out = out.transpose(transpose)
    # May be `img` itself; callers encode it before closing the source.
    return out


def _working_mode(img: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA: what resampling and every output format handle."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode.startswith("I;16"):
        # 16-bit samples scaled to 8 bits (convert("L") would clip everything above 255).
        return img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("I", "F"):
        # No fixed range for 32-bit samples: stretch what is there to 0..255.
        low, high = img.getextrema()
        assert isinstance(low, int | float) and isinstance(high, int | float)
        scale = 255 / (high - low) if high > low else 0.0
        return img.point(lambda v: (v - low) * scale).convert("L")
    if mode == "1":
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    # P, PA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV.
    return img.convert("RGBA" if img.has_transparency_data else "RGB")


def _encode(img: Image.Image, fmt: str, quality: int, *, icc: bytes | None) -> bytes:
    if fmt == "JPEG" and img.mode in ("RGBA", "LA"):
        # JPEG has no alpha: composite over white rather than expose the colours under
        # transparent pixels (often black or garbage).
        base_mode = img.mode[:-1]
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img.convert("RGBA"))
        img = background.convert(base_mode)
    elif fmt in ("BMP", "GIF") and img.mode == "LA":
        img = img.convert("RGBA")
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "WEBP":
        options["method"] = 4  # libwebp's speed/size middle ground
    if icc is not None and fmt in _ICC_FORMATS:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _icc_for(source: Image.Image, out: Image.Image) -> bytes | None:
    """The source's colour profile when it still describes the output's channels (an RGB
    profile for RGB(A), a grey one for L(A)); a CMYK profile on converted RGB would be wrong."""
    icc = source.info.get("icc_profile")
    if not isinstance(icc, bytes) or not icc:
        return None
    same_channels = source.mode.removesuffix("A") == out.mode.removesuffix("A")
    return icc if same_channels else None


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise Invalid(f"{name} must be a positive integer, not {value}.")


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise Invalid(f"quality must be between 1 and 100, not {quality}.")
