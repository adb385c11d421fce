"""What a client sees when it gets something wrong: RFC 9457 problem+json with the right status,
a `loc` for every invalid field, throttling and CORS. No client input ever gives a 500."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings

from flowstage.actors.actor import ActorStopped
from flowstage.actors.clock import ManualClock
from flowstage.server.app import create_app
from flowstage.server.errors import MalformedBody, PreconditionFailed, Throttled
from flowstage.server.problems import problem_middleware
from flowstage.simulation.errors import (
    Conflict,
    FieldError,
    FlowstageError,
    Invalid,
    MailboxFull,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from flowstage.simulation.image_decoding import CorruptFile, ImageTooLarge
from flowstage.simulation.parsing import FileTooLarge, MalformedFile
from flowstage.simulation.states import IllegalTransition

Client = TestClient[Any, web.Application]
JSON = {"Content-Type": "application/json"}


async def problem(resp: Any, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    assert body["type"].startswith("urn:flowstage:problem:")
    assert body["title"]
    assert body["detail"]
    if loc is not None:
        assert [e["loc"] for e in body["errors"]] == [loc], body
        assert all(e["msg"] for e in body["errors"])
    return body



# --- unreadable requests ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"name": "x",', b"{name: 'x'}", b"", b"not json"])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    body = await problem(await client.post("/api/workflows", data=raw, headers=JSON), 400)
    assert "errors" not in body


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_by_content_type_is_415(
    client: Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await client.post("/api/workflows", data=b'{"name": "x"}', headers=headers)
    await problem(resp, 415)
    assert (await (await client.get("/api/workflows")).json())["items"] == []


async def test_a_json_content_type_with_charset_is_accepted(client: Client) -> None:
    resp = await client.post("/api/workflows", data=b'{"name": "x"}',
                             headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 201


async def test_a_body_over_max_request_bytes_is_413(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, max_request_bytes=2048)))
    raw = b'{"name": "big", "description": "' + b"x" * 3000 + b'"}'
    await problem(await client.post("/api/workflows", data=raw, headers=JSON), 413)
    assert (await (await client.get("/api/workflows")).json())["items"] == []
    small = b'{"name": "small", "description": "' + b"x" * 1500 + b'"}'
    assert (await client.post("/api/workflows", data=small, headers=JSON)).status == 201


async def _workflow_count(client: Client) -> int:
    return len((await (await client.get("/api/workflows")).json())["items"])


async def test_bad_utf8_in_a_field_a_node_put_does_not_take_is_400_and_changes_nothing(
    client: Client, wf: str
) -> None:
    url = f"/api/workflows/{wf}"
    before = await (await client.get(url)).json()
    resp = await client.put(f"{url}/nodes/h", data=b'{"name": "\xff\xfe\xfd"}', headers=JSON)
    body = await problem(resp, 400)
    assert body["detail"] == "The body is not valid UTF-8 (byte 10)."
    deep = b'{"position": {"x": 1, "y": 2}, "data": {"label": "ok", "extra": {"note": ["\xc3"]}}}'
    await problem(await client.put(f"{url}/nodes/h", data=deep, headers=JSON), 400)
    assert await (await client.get(url)).json() == before


@pytest.mark.parametrize("raw", [
    # In a field a node ignores, in a field an edge ignores, in a known nested string.
    b'{"name": "x", "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0},'
    b' "measured": {"note": "caf\xe9"}}]}',
    b'{"name": "x", "nodes": [{"id": "t", "type": "manual_trigger", "position": {"x": 0, "y": 0}},'
    b' {"id": "o", "type": "output", "position": {"x": 9, "y": 0}}],'
    b' "edges": [{"source": "t", "target": "o", "style": {"stroke": "\x80"}}]}',
    b'{"name": "x", "nodes": [{"type": "delay", "position": {"x": 0, "y": 0},'
    b' "data": {"label": "\xed\xa0\x80"}}]}',  # an encoded surrogate is not UTF-8
])
async def test_bad_utf8_anywhere_in_a_workflow_post_is_400_and_stores_nothing(
    client: Client, raw: bytes
) -> None:
    await problem(await client.post("/api/workflows", data=raw, headers=JSON), 400)
    assert await _workflow_count(client) == 0


async def test_valid_utf8_beyond_ascii_is_kept_exactly(client: Client) -> None:
    name = "Caf\u00e9 \u2192 \U0001f680 \u65e5\u672c"
    resp = await client.post("/api/workflows", data=f'{{"name": "{name}"}}'.encode(), headers=JSON)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == name


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/workflow", "/api/workflows/a/b/c"])
async def test_an_unknown_route_is_404_problem(client: Client, path: str) -> None:
    await problem(await client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/workflows", {"GET", "POST"}),
        ("DELETE", "/api/workflows", {"GET", "POST"}),
        ("POST", "/api/workflows/wf_x", {"GET", "PUT", "DELETE"}),
        ("GET", "/api/workflows/wf_x/nodes", {"POST"}),
        ("POST", "/api/node-types", {"GET"}),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    resp = await client.request(method, path)
    body = await problem(resp, 405)
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= allow
    assert method not in allow
    assert method in body["detail"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/no/such/path", "/api/workflows/wf_x/nodes/n1/more", "/api/"])
async def test_a_path_no_route_has_is_a_404_problem_by_any_method(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 404
    if method != "HEAD":
        await problem(resp, 404)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "name"]),
        ({"description": "no name"}, ["body", "name"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": 5}, ["body", "name"]),
        ({"name": "x" * 201}, ["body", "name"]),
        ({"name": "x", "tags": [1]}, ["body", "tags", 0]),
        ({"name": "x", "tags": "demo"}, ["body", "tags"]),
        ({"name": "x", "nodes": {}}, ["body", "nodes"]),
        ({"name": "x", "nodes": [{"type": "delay", "position": {"x": "1", "y": 0}}]},
         ["body", "nodes", 0, "position", "x"]),
        ({"name": "x", "nodes": [{"type": "delay", "position": {"x": 0}}]},
         ["body", "nodes", 0, "position", "y"]),
        ({"name": "x", "nodes": [{"type": "delay"}]}, ["body", "nodes", 0, "position"]),
        ({"name": "x", "nodes": [{"type": "delay", "position": {"x": 0, "y": 0}},
                                 {"type": "delay", "position": {"x": 0, "y": 0}, "data": {"label": 3}}]},
         ["body", "nodes", 1, "data", "label"]),
        ({"name": "x", "nodes": [{"type": "delay", "position": {"x": 0, "y": 0}, "data": {"config": []}}]},
         ["body", "nodes", 0, "data", "config"]),
        ({"name": "x", "connections": [{"source": "a"}]}, ["body", "connections", 0, "target"]),
    ],
)
async def test_a_type_error_is_422_at_the_fields_loc(
    client: Client, body: dict[str, Any], loc: list[Any]
) -> None:
    await problem(await client.post("/api/workflows", json=body), 422, loc)


async def test_every_broken_graph_rule_is_listed_with_its_own_loc(client: Client) -> None:
    resp = await client.post("/api/workflows", json={
        "name": "broken",
        "nodes": [
            {"id": "a", "type": "delay", "position": {"x": 0, "y": 0}},
            {"id": "a", "type": "delay", "position": {"x": 0, "y": 0}},
            {"id": "b", "type": "teleporter", "position": {"x": 0, "y": 0}},
            {"id": "c", "type": "image_resize", "position": {"x": 0, "y": 0},
             "data": {"config": {"width": 0}}},
        ],
        "connections": [{"source": "a", "target": "ghost"}],
    })
    body = await problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [
        ["body", "nodes", 1, "id"],
        ["body", "nodes", 2, "type"],
        ["body", "nodes", 3, "data", "config", "width"],
        ["body", "connections", 0, "target"],
    ]


# --- hostile input ---------------------------------------------------------------------------

_DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
_HOSTILE: list[tuple[str, bytes, int]] = [
    ("array", b"[]", 422),
    ("array of workflows", b'[{"name": "x"}]', 422),
    ("null", b"null", 422),
    ("string", b'"name"', 422),
    ("number", b"42", 422),
    ("huge number", b"1e999", 422),
    ("huge integer", b"9" * 5000, 422),
    ("huge coordinate", b'{"name":"x","nodes":[{"type":"delay","position":{"x":1e308,"y":0}}]}', 422),
    ("overflowing coordinate", b'{"name":"x","nodes":[{"type":"delay","position":{"x":1e999,"y":0}}]}', 422),
    ("NaN", b'{"name":"x","nodes":[{"type":"delay","position":{"x":NaN,"y":0}}]}', 400),
    ("Infinity", b'{"name":"x","nodes":[{"type":"delay","position":{"x":Infinity,"y":0}}]}', 400),
    ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000, 422),
    ("deeply nested config", b'{"name":"x","nodes":[{"type":"manual_trigger","position":{"x":0,"y":0},'
                             b'"data":{"config":{"payload":' + _DEEP + b"}}}]}", 400),
    # An unknown top-level field is refused by name before its value is read.
    ("deeply nested unknown field", b'{"name":"x","extra":' + _DEEP + b"}", 422),
    ("deeply nested ignored node field", b'{"name":"x","nodes":[{"type":"delay","position":{"x":0,"y":0},'
                                         b'"measured":' + _DEEP + b"}]}", 400),
    ("non-UTF-8 bytes", b"\xff\xfe\x00\x01", 400),
    ("non-UTF-8 in a string", b'{"name": "\xff\xfe"}', 400),
    ("lone surrogate escape", b'{"name": "\\ud800"}', 400),
    ("NUL in a name", b'{"name": "a\\u0000b"}', 201),
]


@pytest.mark.parametrize(("raw", "status"), [(r, s) for _, r, s in _HOSTILE],
                         ids=[name for name, _, _ in _HOSTILE])
async def test_hostile_bodies_never_give_a_500(client: Client, wf: str, raw: bytes, status: int) -> None:
    resp = await client.post("/api/workflows", data=raw, headers=JSON)
    if status == 201:
        assert resp.status == 201, await resp.text()
    else:
        await problem(resp, status)
    # The same bytes sent to every other JSON endpoint: always a 4xx (or a success).
    for method, path in [
        ("PUT", f"/api/workflows/{wf}"),
        ("POST", f"/api/workflows/{wf}/nodes"),
        ("PUT", f"/api/workflows/{wf}/nodes/h"),
        ("POST", f"/api/workflows/{wf}/connections"),
    ]:
        resp = await client.request(method, path, data=raw, headers=JSON)
        assert resp.status < 500, (method, path, await resp.text())
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "query",
    ["limit=%ff", "limit=" + "9" * 5000, "limit=1e3", "cursor=" + "A" * 4000, "cursor=%00",
     "tag=%ff", "tag=" + "x" * 4000, "limit=%E2%82%85"],
)
async def test_hostile_query_strings_never_give_a_500(client: Client, query: str) -> None:
    resp = await client.get(f"/api/workflows?{query}")
    assert resp.status in (200, 422), await resp.text()
    if resp.status == 422:
        await problem(resp, 422)


# --- throttling ------------------------------------------------------------------------------


async def test_a_client_over_its_rate_gets_429_with_retry_after(aiohttp_client: Any, tmp_path: Path) -> None:
    # On a clock that does not move no token is refilled, however slow the machine is.
    client = await aiohttp_client(create_app(
        make_settings(tmp_path, rate_limit_per_second=1, rate_limit_burst=2), clock=ManualClock()))
    assert (await client.get("/api/workflows")).status == 200
    assert (await client.get("/api/node-types")).status == 200
    resp = await client.get("/api/workflows")
    await problem(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1
    # A liveness probe is never throttled.
    assert (await client.get("/api/health")).status == 200


async def test_a_test_mode_server_limits_in_real_time_and_never_throttles_its_controls(
    aiohttp_client: Any, tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, test_mode=True, rate_limit_per_second=20, rate_limit_burst=3)
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/api/workflows")).status == 200  # at virtual 0
    assert (await client.post("/__flowstage/clock", json={"advance": 5})).status == 200
    assert (await client.get("/api/workflows")).status == 200  # at virtual 5
    assert (await client.post("/__flowstage/reset", json={})).status == 200  # virtual 0 again
    assert (await client.get("/api/workflows")).status == 200  # the clock going back costs nothing
    await problem(await client.get("/api/workflows"), 429)  # the burst of 3 is spent
    for _ in range(20):  # the controls still answer, however throttled the client is
        assert (await client.post("/__flowstage/clock", json={})).status == 200
    deadline = time.monotonic() + 5.0
    while (resp := await client.get("/api/workflows")).status == 429:  # refilled in real time
        assert time.monotonic() < deadline, "no token came back while the virtual clock stood still"
        await asyncio.sleep(0.05)
    assert resp.status == 200


async def test_rate_limit_zero_turns_throttling_off(client: Client) -> None:
    # The shared fixture runs with rate_limit_per_second = 0.
    for _ in range(50):
        assert (await client.get("/api/workflows")).status == 200


# --- CORS ------------------------------------------------------------------------------------

_PREFLIGHT = {
    "Access-Control-Request-Method": "PUT",
    "Access-Control-Request-Headers": "content-type, if-match",
}


async def test_the_default_config_allows_a_preflight_from_any_origin(client: Client) -> None:
    resp = await client.options("/api/workflows/wf_x",
                                headers={"Origin": "http://editor.example:5173", **_PREFLIGHT})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", "http://editor.example:5173")
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    allowed_headers = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed_headers
    assert "if-match" in allowed_headers

    got = await client.get("/api/workflows", headers={"Origin": "http://editor.example:5173"})
    assert got.headers["Access-Control-Allow-Origin"] in ("*", "http://editor.example:5173")


async def test_the_etag_is_readable_by_a_cross_origin_editor(
    client: Client, simple_workflow: dict[str, Any]
) -> None:
    resp = await client.post("/api/workflows", json=simple_workflow,
                             headers={"Origin": "http://editor.example"})
    exposed = resp.headers["Access-Control-Expose-Headers"].lower()
    assert "etag" in exposed
    assert "location" in exposed


async def test_an_origin_not_listed_gets_no_allow_origin(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(
        make_settings(tmp_path, cors_origins=["http://allowed.example"])))
    denied = await client.options("/api/workflows/wf_x",
                                  headers={"Origin": "http://evil.example", **_PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in denied.headers
    await problem(denied, 403)  # aiohttp-cors refuses it; the edge answers as for any error
    got = await client.get("/api/workflows", headers={"Origin": "http://evil.example"})
    assert got.status == 200
    assert "Access-Control-Allow-Origin" not in got.headers

    allowed = await client.options("/api/workflows/wf_x",
                                   headers={"Origin": "http://allowed.example", **_PREFLIGHT})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://allowed.example"


# --- the mapping, byte for byte ---------------------------------------------------------------


def _raising(error: BaseException) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/", handler)
    return app


_PROBLEMS: list[tuple[BaseException, int, bytes]] = [
    (NotFound("No run with id 'r'."), 404,
     b'{"type":"urn:flowstage:problem:not-found","title":"Not found","status":404,'
     b'"detail":"No run with id \'r\'."}'),
    (Conflict("Can't pause when completed"), 409,
     b'{"type":"urn:flowstage:problem:conflict","title":"Conflict","status":409,'
     b'"detail":"Can\'t pause when completed"}'),
    (IllegalTransition("stop", "completed"), 409,
     b'{"type":"urn:flowstage:problem:conflict","title":"Conflict","status":409,'
     b'"detail":"Can\'t stop when completed"}'),
    (ActorStopped("stopped"), 409,
     b'{"type":"urn:flowstage:problem:conflict","title":"Conflict","status":409,"detail":"stopped"}'),
    (PreconditionFailed('If-Match "3" does not match.'), 412,
     b'{"type":"urn:flowstage:problem:precondition-failed","title":"Precondition failed",'
     b'"status":412,"detail":"If-Match \\"3\\" does not match."}'),
    (PayloadTooLarge("Too big."), 413,
     b'{"type":"urn:flowstage:problem:payload-too-large","title":"Payload too large",'
     b'"status":413,"detail":"Too big."}'),
    (ImageTooLarge("A bomb."), 413,
     b'{"type":"urn:flowstage:problem:image-too-large","title":"Image too large",'
     b'"status":413,"detail":"A bomb."}'),
    (FileTooLarge("Too many rows."), 413,
     b'{"type":"urn:flowstage:problem:file-too-large","title":"File too large",'
     b'"status":413,"detail":"Too many rows."}'),
    (Invalid("name is required", [FieldError(("body", "name"), "required"),
                                  FieldError(("body", "nodes", 0), "bad")]), 422,
     b'{"type":"urn:flowstage:problem:validation","title":"Validation failed","status":422,'
     b'"detail":"name is required","errors":[{"loc":["body","name"],"msg":"required"},'
     b'{"loc":["body","nodes",0],"msg":"bad"}]}'),
    (CorruptFile("Not an image."), 422,
     b'{"type":"urn:flowstage:problem:corrupt-file","title":"Corrupt file","status":422,'
     b'"detail":"Not an image."}'),
    (MalformedFile("Not CSV."), 422,
     b'{"type":"urn:flowstage:problem:malformed-file","title":"Malformed file","status":422,'
     b'"detail":"Not CSV."}'),
    (Unavailable("The server is shutting down."), 503,
     b'{"type":"urn:flowstage:problem:unavailable","title":"Service unavailable","status":503,'
     b'"detail":"The server is shutting down."}'),
    (MailboxFull("Busy."), 503,
     b'{"type":"urn:flowstage:problem:mailbox-full","title":"Service unavailable","status":503,'
     b'"detail":"Busy."}'),
    (MalformedBody("The body is not valid JSON."), 400,
     b'{"type":"urn:flowstage:problem:malformed-json","title":"Bad request","status":400,'
     b'"detail":"The body is not valid JSON."}'),
    (FlowstageError("Unnamed."), 500,
     b'{"type":"urn:flowstage:problem:internal","title":"Internal error","status":500,'
     b'"detail":"Unnamed."}'),
    (RuntimeError("a bug"), 500,
     b'{"type":"urn:flowstage:problem:internal","title":"Internal error","status":500,'
     b'"detail":"A bug in Flowstage; it has been logged."}'),
    (web.HTTPNotFound(), 404,
     b'{"type":"urn:flowstage:problem:not-found","title":"Not Found","status":404,'
     b'"detail":"No such resource."}'),
    (web.HTTPConflict(text="Teapot."), 409,
     b'{"type":"urn:flowstage:problem:http-error","title":"Conflict","status":409,"detail":"Teapot."}'),
]


@pytest.mark.parametrize(("error", "status", "body"), _PROBLEMS, ids=lambda v: type(v).__name__)
async def test_each_named_error_has_its_own_problem_body(
    aiohttp_client: Any, error: BaseException, status: int, body: bytes
) -> None:
    resp = await (await aiohttp_client(_raising(error))).get("/")
    assert (resp.status, resp.content_type, await resp.read()) == (status, "application/problem+json", body)


async def test_throttled_says_when_to_retry_in_whole_seconds(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_raising(Throttled("Slow down.", retry_after=1.2)))
    resp = await client.get("/")
    assert (resp.status, resp.headers["Retry-After"], await resp.read()) == (
        429, "2", b'{"type":"urn:flowstage:problem:throttled","title":"Too many requests",'
                  b'"status":429,"detail":"Slow down."}')
