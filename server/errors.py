"""Errors only HTTP has: a body that is not JSON, an `If-Match` that names an old version, a
client over its rate. Nothing below `server/` raises them; like the domain's errors
(`flowstage.simulation.errors`) they are mapped to problem+json in `server.problems`."""

from __future__ import annotations

from flowstage.simulation.errors import FlowstageError

__all__ = ["MalformedBody", "PreconditionFailed", "Throttled"]


class MalformedBody(FlowstageError):
    """The body is not JSON at all (or not UTF-8): a 400, not a 422."""


class PreconditionFailed(FlowstageError):
    """`If-Match` does not name the current version of what the request would change."""


class Throttled(FlowstageError):
    """The client sent more requests than its rate allows; it may retry in `retry_after` s."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
