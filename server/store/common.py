"""Pieces every repository shares: ids, opaque list cursors, pages and ETags."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from flowstage.server.store.db import Connection
from flowstage.simulation.errors import FieldError, Invalid

__all__ = [
    "Listed",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "etag_matches",
    "new_id",
    "newest_first",
    "page_of",
]

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True, rename="camel"):
    items: list[T]
    next_cursor: str | None


_last_ms = 0
_in_ms = 0  # ids made so far in the millisecond _last_ms, less one
# Random hex for ids, drawn from the OS 4 KiB at a time: one system call per id was ~5% of
# an execute's time.
_hex_pool = ""
_hex_at = 0


def newest_first(
    conn: Connection,
    table: str,
    limit: int,
    after: tuple[str, str] | None,
    filters: Sequence[tuple[str, object]] = (),
) -> tuple[list[bytes], bool]:
    """One page of `doc`s of `table`, newest first, after the decoded cursor `after`;
    `filters` are (SQL condition with one `?`, value) pairs. Returns the docs and whether
    more follow. Runs on the database thread."""
    where = [condition for condition, _ in filters]
    params: list[object] = [value for _, value in filters]
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend(after)
    sql = f"SELECT doc FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(limit + 1)
    rows = [row[0] for row in conn.execute(sql, params)]
    return rows[:limit], len(rows) > limit


class Listed(Protocol):
    """What a listed item needs for its cursor."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> str: ...


L = TypeVar("L", bound=Listed)


def page_of(items: list[L], more: bool) -> Page[L]:
    """A Page whose cursor points after its last item when more follow."""
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return Page(items=items, next_cursor=next_cursor)


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id: `wf_0196a3c1f2e8` (milliseconds since 1970), `4f3` (a
    count within that millisecond), `a9b1c2d` (random).

    Lists sort by (createdAt, id), so ids made in the same millisecond must still sort in the
    order they were made: the count does that, for up to 4,096 ids a millisecond (beyond, the
    time part moves on by one). The time part stays the clock's, however many ids a second
    are made."""
    global _last_ms, _in_ms, _hex_pool, _hex_at
    now = time.time_ns() // 1_000_000
    if now > _last_ms:
        _last_ms, _in_ms = now, 0
    elif _in_ms < 0xFFF:
        _in_ms += 1
    else:
        _last_ms, _in_ms = _last_ms + 1, 0
    at = _hex_at
    if at + 7 > len(_hex_pool):
        _hex_pool, at = secrets.token_hex(4096), 0
    _hex_at = at + 7
    return f"{prefix}_{_last_ms:012x}{_in_ms:03x}{_hex_pool[at:at + 7]}"


def encode_cursor(created_at: str, item_id: str) -> str:
    raw = msgspec.json.encode([created_at, item_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, item_id = msgspec.json.decode(raw, type=tuple[str, str])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise Invalid("The cursor is not one this server gave out.",
                      [FieldError(("query", "cursor"), "invalid cursor")]) from None
    return created_at, item_id


def etag_for(version: int) -> str:
    """A strong ETag: the version grows by one on every change of the resource."""
    return f'"{version}"'


def etag_matches(header: str, current: str) -> bool:
    """RFC 9110 If-Match: strong comparison; `*` matches any current representation."""
    tags: Iterable[str] = (t.strip() for t in header.split(","))
    return any(t == "*" or t == current for t in tags)
