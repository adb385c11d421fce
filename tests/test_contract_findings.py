"""What schemathesis found where the server disagreed with its own document, each pinned by a
plain test: a whole number written as a float is an integer, a speed too small to simulate is
refused, a multipart part whose name no header can carry is a 400, and a list's `limit` reads
like any other integer."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[Any, web.Application]


async def problem(resp: Any, status: int, loc: list[Any]) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert [e["loc"] for e in (await resp.json())["errors"]] == [loc]


async def test_a_whole_number_written_as_a_float_is_an_integer(client: Client, wf: str) -> None:
    # JSON Schema's "integer" admits 5.0; so does the server.
    resp = await client.post(f"/api/workflows/{wf}/execute", data=b'{"seed": 5.0}',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["seed"] == 5
    await problem(await client.post(f"/api/workflows/{wf}/execute", json={"seed": 5.5}), 422, ["body", "seed"])


async def test_a_whole_float_in_a_body_read_in_two_steps_is_an_integer_too(client: Client) -> None:
    # An import is read as JSON first, then as whichever document it is.
    document = {"formatVersion": 1.0, "template": {"name": "One node", "nodes": [
        {"id": "a", "type": "output", "position": {"x": 0, "y": 0}}]}}
    resp = await client.post("/api/templates/import", json=document)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "One node"


async def test_a_float_refused_then_broken_json_is_still_a_400(client: Client, wf: str) -> None:
    resp = await client.post(f"/api/workflows/{wf}/execute", data=b'{"seed": 5.0, "speed": ',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"


async def test_a_speed_below_one_millionth_is_refused(client: Client, wf: str) -> None:
    # At 5e-324 a node's duration overflowed to infinity and a resumed run's progress was NaN
    # (sent as null, which the document does not allow).
    await problem(await client.post(f"/api/workflows/{wf}/execute", json={"speed": 5e-324}), 422, ["body", "speed"])
    resp = await client.post(f"/api/workflows/{wf}/execute", json={"speed": 1e-6})
    assert resp.status == 202
    assert (await resp.json())["speed"] == 1e-6


async def test_an_upload_part_named_with_a_control_character_is_400_and_others_are_ignored(
    client: Client,
) -> None:
    def post(extra_name: bytes) -> Any:
        body = (b'--b\r\nContent-Disposition: form-data; name="' + extra_name + b'"\r\n\r\nv\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                b"Content-Type: text/plain\r\n\r\nhello\n\r\n--b--\r\n")
        return client.post("/api/files/upload", data=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})

    unreadable = await post(b"a\x17b")
    assert unreadable.status == 400
    assert unreadable.content_type == "application/problem+json"
    ignored = await post("note \u00e9".encode())
    assert ignored.status == 201
    assert [f["name"] for f in (await ignored.json())["items"]] == ["a.txt"]


async def test_a_limit_written_as_a_whole_float_reads_as_an_integer(client: Client, wf: str) -> None:
    assert (await client.get("/api/workflows", params={"limit": "1.0"})).status == 200
    await problem(await client.get("/api/workflows", params={"limit": "1.5"}), 422, ["query", "limit"])
