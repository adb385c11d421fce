"""Timestamps as the contract writes them: RFC 3339, UTC, milliseconds, a trailing `Z`."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_ms", "parse_iso"]


def iso_ms(epoch_seconds: float) -> str:
    """`1764132241.123` -> `"2025-11-26T04:44:01.123Z"`."""
    dt = datetime.fromtimestamp(round(epoch_seconds, 3), tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """The inverse of `iso_ms`: seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
