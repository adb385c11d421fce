"""problem+json (RFC 9457): the one place where errors become HTTP responses.

`PROBLEMS` is the table of every named error (the domain's in `flowstage.simulation.errors`,
the file errors of `simulation.image_decoding` and `simulation.parsing`, and HTTP's own in
`server.errors`): its status, title and problem type. An error not listed answers as its nearest listed base class (an
`IllegalTransition` is a `Conflict`). `problem_response` turns whatever a handler raises into
a response from that table; aiohttp's own HTTP errors (unknown path, wrong method, body too
large) get a sentence a person can act on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

import msgspec
from aiohttp import web

from flowstage.server.errors import MalformedBody, PreconditionFailed, Throttled
from flowstage.simulation.errors import (
    Conflict,
    FlowstageError,
    Invalid,
    MailboxFull,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from flowstage.simulation.image_decoding import CorruptFile, ImageTooLarge
from flowstage.simulation.parsing import FileTooLarge, MalformedFile

__all__ = ["PROBLEMS", "Problem", "ProblemError", "ProblemType", "problem_middleware", "problem_response"]

log = logging.getLogger("flowstage.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProblemError(msgspec.Struct, frozen=True):
    loc: list[str | int]
    msg: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str = ""
    errors: list[ProblemError] | None = None


class ProblemType(NamedTuple):
    status: int
    title: str
    slug: str  # the problem's type is urn:flowstage:problem:<slug>


PROBLEMS: Mapping[type[FlowstageError], ProblemType] = {
    FlowstageError: ProblemType(500, "Internal error", "internal"),
    MalformedBody: ProblemType(400, "Bad request", "malformed-json"),
    NotFound: ProblemType(404, "Not found", "not-found"),
    Conflict: ProblemType(409, "Conflict", "conflict"),
    PreconditionFailed: ProblemType(412, "Precondition failed", "precondition-failed"),
    PayloadTooLarge: ProblemType(413, "Payload too large", "payload-too-large"),
    ImageTooLarge: ProblemType(413, "Image too large", "image-too-large"),
    FileTooLarge: ProblemType(413, "File too large", "file-too-large"),
    Invalid: ProblemType(422, "Validation failed", "validation"),
    CorruptFile: ProblemType(422, "Corrupt file", "corrupt-file"),
    MalformedFile: ProblemType(422, "Malformed file", "malformed-file"),
    Throttled: ProblemType(429, "Too many requests", "throttled"),
    Unavailable: ProblemType(503, "Service unavailable", "unavailable"),
    MailboxFull: ProblemType(503, "Service unavailable", "mailbox-full"),
}
_INTERNAL = PROBLEMS[FlowstageError]

# aiohttp's own errors carry their status and title (its reason); these give the problem type
# and, in place of aiohttp's default text ("404: Not Found"), a sentence a person can act on.
_HTTP_ERRORS = {
    400: ("bad-request", "The request could not be read."),
    404: ("not-found", "No such resource."),
    405: ("method-not-allowed", "This resource does not support that method."),
    413: ("payload-too-large", "The request body is larger than this server accepts."),
    415: ("unsupported-media-type", "Wrong content type."),
}

_encoder = msgspec.json.Encoder()


def _problem_type(error: FlowstageError) -> ProblemType:
    """The entry of the error's class, or of its nearest listed base class."""
    for cls in type(error).__mro__:
        found = PROBLEMS.get(cls)
        if found is not None:
            return found
    return _INTERNAL


def _response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[ProblemError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = Problem(type=f"urn:flowstage:problem:{slug}", title=title, status=status,
                   detail=detail, errors=errors)
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers,
        content_type="application/problem+json",
    )


def _from_error(error: FlowstageError) -> web.Response:
    status, title, slug = _problem_type(error)
    errors = None
    headers: dict[str, str] = {}
    if isinstance(error, Invalid) and error.errors:  # a refusal that names no field has none
        errors = [ProblemError(loc=list(e.loc), msg=e.msg) for e in error.errors]
    if isinstance(error, Throttled):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return _response(status, title, error.detail, slug, errors, headers)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    slug, default_detail = _HTTP_ERRORS.get(exc.status, ("http-error", exc.reason))
    text = exc.text or ""
    # aiohttp's default text is "404: Not Found"; prefer a sentence a person can act on.
    detail = default_detail if (not text or text.startswith(f"{exc.status}:")) else text
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{exc.method} is not allowed here; use {', '.join(allowed)}."
    return _response(exc.status, exc.reason, detail, slug, headers=headers)


def problem_response(request: web.Request, error: Exception) -> web.Response:
    """The problem+json answer to what a handler raised. Re-raises what is not an error
    (a redirect, a cancelled request, a client gone)."""
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        return _from_http_exception(error)
    if isinstance(error, FlowstageError):
        return _from_error(error)
    if isinstance(error, ConnectionResetError):
        raise error
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
    status, title, slug = _INTERNAL
    return _response(status, title, "A bug in Flowstage; it has been logged.", slug)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`problem_response` as a middleware of its own (the server uses `server.edge`'s)."""
    try:
        return await handler(request)
    except Exception as error:  # CancelledError is a BaseException: it passes
        return problem_response(request, error)
