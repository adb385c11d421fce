"""Flowstage's errors: one base class with a named subclass per kind of failure.

They say what went wrong, not how a protocol reports it: `flowstage.server.problems` maps each
one to an HTTP status and a problem+json type, in one table, and nothing else builds error
responses.
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
    """An error Flowstage raises on purpose. `detail` says what happened, in a sentence for
    the person who asked."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(FlowstageError):
    """What was named does not exist."""


class Conflict(FlowstageError):
    """The current state does not allow what was asked (pausing a finished run)."""


class PayloadTooLarge(FlowstageError):
    """An input, or the work asked of it, is larger than this server accepts."""


class Invalid(FlowstageError):
    """Well-formed but invalid input, listing every bad field."""

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)


class Unavailable(FlowstageError):
    """It cannot be done now (the server is shutting down, or busy); later it may."""


class MailboxFull(Unavailable):
    """An actor's bounded mailbox refused a message; the client should retry later."""
