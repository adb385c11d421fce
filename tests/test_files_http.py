"""Files through the HTTP API: upload, metadata from the bytes, thumbnails, dedupe, delete,
and every way an upload can be wrong."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from conftest import ClientFactory, make_settings
from PIL import Image

from flowstage.server.app import create_app

Client = TestClient[Any, web.Application]


def png_bytes(size: tuple[int, int] = (64, 32), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 255) if mode == "RGBA" else "red").save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_orientation_6() -> bytes:
    """Raw 40x20 pixels whose top-left quarter is red; EXIF says "rotate 90° clockwise"."""
    img = Image.new("RGB", (40, 20), "blue")
    img.paste((255, 0, 0), (0, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (30, 30), color) for color in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 100,000 x 100,000 pixels."""
    raw = bytearray(png_bytes((1, 1), "RGB"))
    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


async def upload(client: Client, *parts: tuple[str, bytes, str], field: str = "file") -> Any:
    form = FormData(quote_fields=False)  # as browsers send names: raw, not percent-encoded
    for name, data, content_type in parts:
        form.add_field(field, data, filename=name, content_type=content_type)
    return await client.post("/api/files/upload", data=form)


def stored_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "files").rglob("*") if p.is_file())


async def test_png_upload_gives_metadata_thumbnail_and_exact_bytes(client: Client) -> None:
    data = png_bytes((640, 320))
    resp = await upload(client, ("logo.png", data, "image/png"))
    assert resp.status == 201
    (info,) = (await resp.json())["items"]
    assert info["mimeType"] == "image/png"
    assert info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["metadata"]["width"] == 640 and info["metadata"]["height"] == 320
    assert info["metadata"]["format"] == "PNG"
    assert info["metadata"]["mode"] == "RGBA"

    content = await client.get(info["contentUrl"])
    assert content.status == 200
    assert await content.read() == data
    assert content.headers["Content-Type"] == "image/png"
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    assert 'filename="logo.png"' in content.headers["Content-Disposition"]

    thumb = await client.get(info["thumbnailUrl"])
    assert thumb.status == 200
    assert thumb.headers["Content-Type"] == "image/webp"
    assert "immutable" in thumb.headers["Cache-Control"]
    image = Image.open(io.BytesIO(await thumb.read()))
    assert image.format == "WEBP"
    assert image.size == (256, 128)


async def test_exif_orientation_is_applied_to_size_and_thumbnail(client: Client) -> None:
    resp = await upload(client, ("photo.jpg", jpeg_with_orientation_6(), "image/jpeg"))
    (info,) = (await resp.json())["items"]
    assert (info["metadata"]["width"], info["metadata"]["height"]) == (20, 40)
    assert info["metadata"]["format"] == "JPEG"
    thumb = Image.open(io.BytesIO(await (await client.get(info["thumbnailUrl"])).read())).convert("RGB")
    assert thumb.size == (20, 40)
    # Rotating 90° clockwise moves the raw top-left corner to the top-right.
    top_right, bottom_left = thumb.getpixel((15, 5)), thumb.getpixel((5, 35))
    assert isinstance(top_right, tuple) and isinstance(bottom_left, tuple)  # RGB: (r, g, b)
    assert top_right[0] > 150 and top_right[2] < 100
    assert bottom_left[2] > 150 and bottom_left[0] < 100


async def test_animated_gif_reports_frames_and_thumbnails_the_first(client: Client) -> None:
    (info,) = (await (await upload(client, ("anim.gif", animated_gif(), "image/gif"))).json())["items"]
    assert info["metadata"]["frames"] == 3
    assert info["metadata"]["animated"] is True
    thumb = await client.get(info["thumbnailUrl"])
    assert Image.open(io.BytesIO(await thumb.read())).size == (30, 30)


async def test_csv_text_and_binary_get_their_own_metadata(client: Client) -> None:
    csv_data = b"name;age\nada;36\nalan;41\ngrace;85\n"
    resp = await upload(
        client,
        ("people.csv", csv_data, "text/csv"),
        ("notes.txt", b"line one\nline two\n", "text/plain"),
        ("blob.bin", bytes(range(256)) * 4, "application/octet-stream"),
    )
    assert resp.status == 201
    csv_info, text_info, bin_info = (await resp.json())["items"]
    assert csv_info["mimeType"] == "text/csv"
    assert csv_info["metadata"]["delimiter"] == ";"
    assert csv_info["metadata"]["rows"] == 3 and csv_info["metadata"]["columns"] == 2
    assert csv_info["thumbnailUrl"] is None
    assert text_info["mimeType"] == "text/plain"
    assert bin_info["mimeType"] == "application/octet-stream"
    thumb = await client.get(f"/api/files/{csv_info['id']}/thumbnail")
    assert thumb.status == 404


async def test_type_comes_from_bytes_not_from_name_or_claimed_type(client: Client) -> None:
    data = jpeg_with_orientation_6()
    (info,) = (await (await upload(client, ("picture.png", data, "text/html"))).json())["items"]
    assert info["mimeType"] == "image/jpeg"
    content = await client.get(info["contentUrl"])
    assert content.headers["Content-Type"] == "image/jpeg"


async def test_path_traversal_name_is_sanitised_and_never_used_on_disk(
    client: Client, tmp_path: Path
) -> None:
    (info,) = (await (await upload(client, ("../../etc/passwd", b"root:x:0:0\n", "text/plain"))).json())["items"]
    assert info["name"] == "passwd"
    assert not (tmp_path.parent / "etc").exists()
    assert "passwd" not in stored_files(tmp_path)


async def test_identical_bytes_are_stored_once_and_survive_until_last_delete(
    client: Client, tmp_path: Path
) -> None:
    data = png_bytes()
    first = (await (await upload(client, ("a.png", data, "image/png"))).json())["items"][0]
    second = (await (await upload(client, ("b.png", data, "image/png"))).json())["items"][0]
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    blobs = list((tmp_path / "files" / "blobs").iterdir())
    assert [p.name for p in blobs] == [first["sha256"]]

    assert (await client.delete(f"/api/files/{first['id']}")).status == 204
    assert (await client.get(f"/api/files/{first['id']}")).status == 404
    assert await (await client.get(second["contentUrl"])).read() == data
    assert (await client.delete(f"/api/files/{second['id']}")).status == 204
    assert stored_files(tmp_path) == []


async def test_list_filters_by_kind_and_pages(client: Client) -> None:
    await upload(client, ("a.png", png_bytes(), "image/png"), ("b.txt", b"hello\n", "text/plain"))
    await upload(client, ("c.png", png_bytes((8, 8)), "image/png"))
    images = await (await client.get("/api/files?kind=image")).json()
    assert [i["name"] for i in images["items"]] == ["c.png", "a.png"]
    first = await (await client.get("/api/files?limit=2")).json()
    rest = await (await client.get(f"/api/files?limit=2&cursor={first['nextCursor']}")).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["nextCursor"] is None


async def test_get_file_has_etag_and_304(client: Client) -> None:
    (info,) = (await (await upload(client, ("a.png", png_bytes(), "image/png"))).json())["items"]
    resp = await client.get(f"/api/files/{info['id']}")
    assert resp.status == 200
    etag = resp.headers["ETag"]
    again = await client.get(f"/api/files/{info['id']}", headers={"If-None-Match": etag})
    assert again.status == 304


async def test_oversize_upload_is_413_and_leaves_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, max_upload_bytes=64 * 1024)))
    resp = await upload(client, ("small.txt", b"ok\n", "text/plain"),
                        ("big.bin", b"x" * 200_000, "application/octet-stream"))
    assert resp.status == 413
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert stored_files(tmp_path) == []
    listing = await (await client.get("/api/files")).json()
    assert listing["items"] == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"no boundary at all"),
        ("multipart/form-data; boundary=xx",
         b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nunclosed'),
        ("multipart/form-data; boundary=xx", b"--xx\r\nthis is not a header line\r\n\r\nabc\r\n--xx--\r\n"),
    ],
)
async def test_malformed_multipart_is_400(client: Client, content_type: str, body: bytes, tmp_path: Path) -> None:
    resp = await client.post("/api/files/upload", data=body, headers={"Content-Type": content_type})
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert stored_files(tmp_path) == []


async def test_upload_without_file_part_is_400_and_wrong_type_415(client: Client) -> None:
    resp = await upload(client, ("a.txt", b"hi", "text/plain"), field="attachment")
    assert resp.status == 400
    resp = await client.post("/api/files/upload", json={"file": "nope"})
    assert resp.status == 415


async def test_decompression_bomb_is_refused_without_5xx(client: Client, tmp_path: Path) -> None:
    resp = await upload(client, ("bomb.png", bomb_png(), "image/png"))
    assert resp.status == 413
    body = await resp.json()
    assert "pixels" in body["detail"].lower() or "large" in body["detail"].lower()
    assert stored_files(tmp_path) == []


async def test_truncated_jpeg_is_422(client: Client, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buf, "JPEG")
    resp = await upload(client, ("fine.png", png_bytes(), "image/png"),
                        ("cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2], "image/jpeg"))
    assert resp.status == 422
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = await resp.json()
    assert problem["detail"].startswith("cut.jpg: ")
    # The second part named "file" is the corrupt one: the editor can mark it.
    assert [e["loc"] for e in problem["errors"]] == [["body", "file", 1]]
    assert stored_files(tmp_path) == []  # the good file of the same upload is not kept either
    assert (await (await client.get("/api/files")).json())["items"] == []


async def test_files_survive_restart_and_orphans_are_cleaned(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage="sqlite")
    client = await aiohttp_client(create_app(settings))
    data = png_bytes()
    (info,) = (await (await upload(client, ("keep.png", data, "image/png"))).json())["items"]
    await client.close()
    (tmp_path / "files" / "tmp" / "half-written").write_bytes(b"partial")
    (tmp_path / "files" / "blobs" / ("0" * 64)).write_bytes(b"orphan")

    client = await aiohttp_client(create_app(settings))
    assert await (await client.get(info["contentUrl"])).read() == data
    assert stored_files(tmp_path) == sorted([info["sha256"], f"{info['sha256']}.webp"])


async def test_delete_honours_if_match(client: Client) -> None:
    (info,) = (await (await upload(client, ("a.png", png_bytes(), "image/png"))).json())["items"]
    etag = (await client.get(f"/api/files/{info['id']}")).headers["ETag"]
    refused = await client.delete(f"/api/files/{info['id']}", headers={"If-Match": '"nope"'})
    assert refused.status == 412
    assert (await client.get(f"/api/files/{info['id']}")).status == 200
    assert (await client.delete(f"/api/files/{info['id']}", headers={"If-Match": etag})).status == 204
    assert (await client.get(f"/api/files/{info['id']}")).status == 404
