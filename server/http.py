"""Small HTTP helpers that handlers share: decoding bodies and query parameters into msgspec
types, encoding responses, ETags.

Decoding failures raise named errors (`simulation.errors`, `server.errors`; aiohttp's own for
415/413); the edge (server.edge) turns them into problem+json, so handlers never build error bodies.
"""

from __future__ import annotations

import hashlib
import re
import types
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import msgspec
from aiohttp import web
from msgspec import Meta

from flowstage.server.errors import MalformedBody
from flowstage.simulation.errors import FieldError, Invalid

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "PageSize",
    "content_etag",
    "convert_body",
    "convert_param",
    "decode_body",
    "etag_response",
    "hashed_response",
    "json_response",
    "loc_from_msgspec",
    "not_modified",
    "page_params",
]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_AT = re.compile(r" - at `\$(.*)`$")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def loc_from_msgspec(message: str, prefix: tuple[str | int, ...] = ("body",)) -> tuple[str | int, ...]:
    """`"Expected int, got str - at $.nodes[0].position.x"` -> body, nodes, 0, position, x."""
    loc: list[str | int] = list(prefix)
    at = _AT.search(message)
    if at:
        for name, index in _PATH_TOKEN.findall(at.group(1)):
            loc.append(int(index) if index else name)
    missing = _MISSING.search(message)
    if missing:
        loc.append(missing.group(1))
    return tuple(loc)


def _message_without_path(message: str) -> str:
    return _AT.sub("", message)


def _invalid(exc: msgspec.ValidationError, prefix: tuple[str | int, ...], source: Any, type_: Any) -> Invalid:
    """The 422 for what msgspec refused while reading `source` (JSON bytes, or a value decoded
    from them) as `type_`. msgspec names an object's key `[...]` in its path
    (`$.script[...].outcome`): the key is found again in `source`, the first one whose value
    the type refuses, as msgspec reads in order."""
    text = str(exc)
    message = _message_without_path(text)
    loc = loc_from_msgspec(text, prefix)
    at = _AT.search(text)
    if at is not None and _ANY_KEY in at.group(1):
        obj = source
        if isinstance(source, bytes):
            try:
                obj = msgspec.json.decode(source)
            except (msgspec.DecodeError, RecursionError):
                obj = None
        keyed = _located(at.group(1), obj, type_)
        if keyed is not None:
            loc = (*prefix, *keyed, *loc_from_msgspec(message, ()))
    return Invalid(message, [FieldError(loc, message)])


_ANY_KEY = "[...]"
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")


def _located(path: str, obj: Any, type_: Any) -> list[str | int] | None:
    """`path`'s steps with each `[...]` replaced by the key it stands for; None if lost."""
    loc: list[str | int] = []
    for name, index, any_key in _STEP.findall(path):
        type_ = _member(type_, obj)
        if any_key:
            if not isinstance(obj, dict) or get_origin(type_) is not dict:
                return None
            value_type = get_args(type_)[1]
            key = next((k for k, v in obj.items() if not _fits(v, value_type)), None)
            if key is None:
                return None
            loc.append(key)
            obj, type_ = obj[key], value_type
        elif index:
            position = int(index)
            loc.append(position)
            args = get_args(type_)
            obj = obj[position] if isinstance(obj, list) and position < len(obj) else None
            type_ = args[0] if args else Any
        else:
            loc.append(name)
            obj = obj.get(name) if isinstance(obj, dict) else None
            type_ = _field_type(type_, name)
    return loc


def _member(type_: Any, obj: Any) -> Any:
    """`type_` without Annotated, and of a union the member for `obj`'s kind of JSON value."""
    while get_origin(type_) is Annotated:
        type_ = get_args(type_)[0]
    if get_origin(type_) in (Union, types.UnionType):
        for member in get_args(type_):
            member = _member(member, obj)
            origin = get_origin(member) or member
            is_object = origin is dict or (isinstance(origin, type) and issubclass(origin, msgspec.Struct))
            if (isinstance(obj, dict) and is_object) or (isinstance(obj, list) and origin in (list, tuple)):
                return member
    return type_


def _field_type(struct: Any, name: str) -> Any:
    if isinstance(struct, type) and issubclass(struct, msgspec.Struct):
        for field in msgspec.structs.fields(struct):
            if field.encode_name == name:
                return field.type
    return Any


def _fits(value: Any, type_: Any) -> bool:
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError:
        return False
    return True


def convert_body(obj: Any, type_: type[T], prefix: tuple[str | int, ...] = ("body",)) -> T:
    """An already-decoded JSON value read as `type_`, with errors located as decode_json's
    (for bodies whose shape is chosen after a first look at them)."""
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        if _FLOAT_REFUSED in str(exc):
            try:
                return msgspec.convert(_whole_numbers(obj), type_)
            except msgspec.ValidationError:
                pass
        raise _invalid(exc, prefix, obj, type_) from None


def _check_utf8(raw: bytes) -> None:
    """Refuse a body that is not UTF-8, wherever the bad bytes are. msgspec checks only the
    strings it reads: the value of a field it skips (editor fields of a node, a field a PUT
    does not take) would pass unchecked, and the request would succeed."""
    if raw.isascii():  # the usual body: no copy, a few GB/s
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"The body is not valid UTF-8 (byte {exc.start}).") from None


# JSON has one kind of number: `2.0` is the integer 2 (JSON Schema agrees, so clients and
# schema-driven tools send it), but msgspec reads an int field strictly. A body refused for a
# float is read again with every whole number as an int; bodies that decode never pay for it.
_FLOAT_REFUSED = "got `float`"
_EXACT = 2**53


def _whole_numbers(obj: Any) -> Any:
    if isinstance(obj, float):
        return int(obj) if obj.is_integer() and -_EXACT <= obj <= _EXACT else obj
    if isinstance(obj, list):
        return [_whole_numbers(item) for item in obj]
    if isinstance(obj, dict):
        return {key: _whole_numbers(value) for key, value in obj.items()}
    return obj


def convert_param(value: Any, type_: Any, loc: tuple[str | int, ...]) -> Any:
    """A query parameter's text (a list of texts, if repeatable) read as `type_`, e.g. "20" as
    `Annotated[int, Meta(ge=1)]`; 422 at `loc` if it does not fit, or is None (missing)."""
    if value is None:
        raise Invalid(f"{loc[-1]} is required", [FieldError(loc, "required")])
    try:
        return msgspec.convert(value, type_, strict=False)
    except msgspec.ValidationError as exc:
        message = _message_without_path(str(exc))
        raise Invalid(f"{loc[-1]}: {message}", [FieldError(loc, message)]) from None


def decode_json(raw: bytes, type_: type[T], prefix: tuple[str | int, ...] = ("body",)) -> T:
    """Every JSON body goes through here: UTF-8 first, then JSON, then `type_`."""
    _check_utf8(raw)
    decoder: msgspec.json.Decoder[T] | None = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if _FLOAT_REFUSED not in str(exc):
            raise _invalid(exc, prefix, raw, type_) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("The body is nested too deeply to read.") from None
    # Refused for a float; read as plain JSON first, so a syntax error further on is still a 400.
    return convert_body(decode_json(raw, object, prefix), type_, prefix)


async def decode_body(request: web.Request, type_: type[T], *, optional: bool = False) -> T:
    """Decode a JSON request body into `type_`. With `optional`, an empty body is `{}`."""
    if optional and not request.body_exists:
        return decode_json(b"{}", type_)
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise web.HTTPUnsupportedMediaType(
            text=f"Send the body as application/json, not {content_type or 'nothing'}."
        )
    raw = await request.read()  # 413 beyond client_max_size, raised by aiohttp
    if optional and not raw.strip():
        raw = b"{}"
    return decode_json(raw, type_)


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(obj), status=status, headers=headers,
        content_type="application/json",
    )


def not_modified(request: web.Request, etag: str) -> bool:
    """True when the client's `If-None-Match` already names the current representation."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    return any(t.strip() in (etag, "*", f"W/{etag}") for t in header.split(","))


def etag_response(
    request: web.Request, body: bytes, etag: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An already-encoded JSON body with its strong ETag, or 304 if the client has it."""
    if not_modified(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type="application/json", headers={"ETag": etag, **(headers or {})})


def content_etag(body: bytes) -> str:
    """A strong ETag for a representation that has no version: a hash of its bytes."""
    return f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def hashed_response(request: web.Request, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    """`obj` as JSON with a content-hash ETag (304 when unchanged): for derived resources."""
    body = _encoder.encode(obj)
    return etag_response(request, body, content_etag(body), headers)


# `?limit=`: the one statement of the page-size rule, for the route table's Param (documented
# and checked before the handler runs) and for page_params.
PageSize = Annotated[int, Meta(ge=1, le=500)]
DEFAULT_PAGE_SIZE = 50


def page_params(request: web.Request) -> tuple[int, str | None]:
    """`?limit=` (default 50, 1–500) and `?cursor=`."""
    raw = request.query.get("limit")
    limit = DEFAULT_PAGE_SIZE if raw is None else convert_param(raw, PageSize, ("query", "limit"))
    return limit, request.query.get("cursor") or None
