"""Flowstage's errors: one base class with a named subclass per kind of failure.

Each carries the HTTP status it stands for, so the server maps every one of them to
problem+json in a single place; nothing else builds error responses.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Conflict",
    "FieldError",
    "FlowstageError",
    "Invalid",
    "MailboxFull",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Throttled",
    "Unavailable",
]

Loc = tuple[str | int, ...]


class FieldError:
    """One invalid field: where it is (`loc`, starting with "body", "query" or "path") and why."""

    __slots__ = ("loc", "msg")

    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        self.loc: Loc = tuple(loc)
        self.msg = msg

    def __repr__(self) -> str:
        return f"FieldError({list(self.loc)!r}, {self.msg!r})"


class FlowstageError(Exception):
    status = 500
    title = "Internal error"
    slug = "internal"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class NotFound(FlowstageError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(FlowstageError):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(FlowstageError):
    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(FlowstageError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class Invalid(FlowstageError):
    """Well-formed but invalid input: a 422 listing every bad field."""

    status, title, slug = 422, "Validation failed", "validation"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)


class Throttled(FlowstageError):
    status, title, slug = 429, "Too many requests", "throttled"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(FlowstageError):
    status, title, slug = 503, "Service unavailable", "unavailable"


class MailboxFull(Unavailable):
    """An actor's bounded mailbox refused a message; the client should retry later."""

    slug = "mailbox-full"
