"""What the parsing nodes (`csv_parse`, `json_parse`) output for an uploaded file: its real
content, read strictly (UTF-8, well-formed) and bounded (a node's output travels in one event,
so a large CSV yields its first rows and a count of all of them).

Pure and synchronous: the server calls these from a worker thread, tests call them directly.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from flowstage.simulation.errors import Invalid, PayloadTooLarge

__all__ = [
    "MAX_PARSED_BYTES",
    "MAX_PARSED_ROWS",
    "READ_CHUNK_BYTES",
    "FileTooLarge",
    "MalformedFile",
    "parse_csv",
    "parse_json",
]


class MalformedFile(Invalid):
    """A file handed to a parsing node is not the UTF-8 CSV or JSON that node reads."""


class FileTooLarge(PayloadTooLarge):
    """A file's parsed content cannot fit in one node output."""


# A parsing node's output travels in one event and stays in the run's snapshot: at most this
# many CSV rows per file, and about this many bytes of file content in one node's output.
MAX_PARSED_ROWS: Final = 1000
MAX_PARSED_BYTES: Final = 1024 * 1024
# A CSV line longer than this is no table anyone wrote; splitting lines would hold it whole.
_MAX_LINE_CHARS: Final = 16 * 1024 * 1024
# Files are streamed in pieces of this size (parsing here, line counts in simulation.inspection).
READ_CHUNK_BYTES: Final = 1024 * 1024


def _not_utf8(name: str, byte: bytes, offset: int) -> MalformedFile:
    return MalformedFile(f"{name} is not UTF-8 text: byte 0x{byte.hex()} at offset {offset} does not decode.")


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
        chunk = fh.read(READ_CHUNK_BYTES)
        held = len(decoder.getstate()[0])  # the start of a character split by the last chunk
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _not_utf8(name, exc.object[exc.start : exc.start + 1], offset - held + exc.start) from None
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
    if data.startswith(codecs.BOM_UTF8):
        # Blanked rather than cut, so the byte offsets in messages stay the file's own.
        data = b"   " + data[len(codecs.BOM_UTF8) :]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(name, data[exc.start : exc.start + 1], exc.start) from None
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

