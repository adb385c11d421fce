"""Pieces every repository shares: ids, opaque list cursors, pages and ETags."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable
from typing import Generic, TypeVar

import msgspec

from simulation.errors import FieldError, Invalid

__all__ = [
    "Page",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "etag_matches",
    "new_id",
]

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True, rename="camel"):
    items: list[T]
    next_cursor: str | None


_last_ms = 0


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id: `wf_0196a3c1f2e84f3a9b1c2d`.

    Lists sort by (createdAt, id), so ids made in the same millisecond must still sort in the
    order they were made: the time part never repeats within a process (it runs ahead of the
    clock by at most the burst of ids made in one millisecond)."""
    global _last_ms
    _last_ms = max(time.time_ns() // 1_000_000, _last_ms + 1)
    return f"{prefix}_{_last_ms:012x}{secrets.token_hex(5)}"


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
