"""File inspection, thumbnails and image processing: plain calls on files generated here."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from flowstage.simulation.errors import Invalid, PayloadTooLarge
from flowstage.simulation.filenames import MAX_NAME_CHARS, sanitise_name
from flowstage.simulation.image_decoding import CorruptFile, ImageTooLarge
from flowstage.simulation.images import THUMBNAIL_MAX_SIDE, convert_image, resize_image, thumbnail_image
from flowstage.simulation.inspection import TEXT_SNIFF_BYTES, inspect_file, sha256_file

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
ORIENTATION = 0x0112


def save(img: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    img.save(path, fmt, **options)
    return path


def encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def is_close(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def sideways_jpeg(path: Path, size: tuple[int, int] = (400, 200)) -> Path:
    """Stored landscape with a red top-left quarter; EXIF orientation 6 says "turn it
    90 degrees clockwise to show it", so it displays as portrait, red at the top right."""
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, size[0] // 4, size[1] // 2))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return save(img, path, "JPEG", exif=exif, quality=95)


# --- images: metadata -------------------------------------------------------------------------


def test_png_rgba_reports_size_format_mode_and_a_webp_thumbnail(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (64, 32), (10, 20, 30, 128)), tmp_path / "a.png", "PNG")

    result = inspect_file(path)

    assert (result.kind, result.mime_type) == ("image", "image/png")
    assert result.metadata == {
        "width": 64,
        "height": 32,
        "format": "PNG",
        "mode": "RGBA",
        "frames": 1,
        "animated": False,
    }
    assert result.thumbnail is not None
    thumb = decode(result.thumbnail)
    assert (thumb.format, thumb.size) == ("WEBP", (64, 32))  # small images are not enlarged
    assert thumb.mode == "RGBA"


def test_dpi_is_reported_as_the_user_set_it(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "p.png", "PNG", dpi=(300, 150))

    assert inspect_file(path).metadata["dpi"] == [300.0, 150.0]


def test_exif_orientation_6_reports_displayed_size_and_turns_the_thumbnail(
    tmp_path: Path,
) -> None:
    result = inspect_file(sideways_jpeg(tmp_path / "photo.jpg"))

    assert result.mime_type == "image/jpeg"
    assert (result.metadata["width"], result.metadata["height"]) == (200, 400)
    assert result.metadata["orientation"] == 6
    assert result.thumbnail is not None
    thumb = decode(result.thumbnail).convert("RGB")
    assert thumb.size == (128, 256)
    # Raw top-left is displayed top-right.
    assert is_close(thumb.getpixel((110, 30)), RED)
    assert is_close(thumb.getpixel((20, 30)), BLUE)
    assert is_close(thumb.getpixel((110, 220)), BLUE)


def test_small_sideways_jpeg_reports_swapped_dimensions(tmp_path: Path) -> None:
    result = inspect_file(sideways_jpeg(tmp_path / "small.jpg", size=(40, 20)))

    assert (result.metadata["width"], result.metadata["height"]) == (20, 40)
    assert result.thumbnail is not None
    assert decode(result.thumbnail).size == (20, 40)


def test_animated_gif_counts_frames_and_thumbnails_the_first(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    result = inspect_file(path)

    assert result.mime_type == "image/gif"
    assert result.metadata["frames"] == 3
    assert result.metadata["animated"] is True
    assert result.thumbnail is not None
    thumb = decode(result.thumbnail).convert("RGB")
    assert is_close(thumb.getpixel((15, 10)), RED)


def test_large_image_thumbnail_fits_256_and_keeps_aspect(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (3000, 1000), GREEN), tmp_path / "wide.png", "PNG")

    result = inspect_file(path)

    assert (result.metadata["width"], result.metadata["height"]) == (3000, 1000)
    assert result.thumbnail is not None
    assert decode(result.thumbnail).size == (THUMBNAIL_MAX_SIDE, 85)


def test_type_comes_from_bytes_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "holiday.png"
    path.write_bytes(encoded(Image.new("RGB", (12, 9), RED), "JPEG"))

    result = inspect_file(path)

    assert (result.mime_type, result.metadata["format"]) == ("image/jpeg", "JPEG")


@pytest.mark.parametrize(
    ("mode", "fmt", "value", "expected"),
    [
        ("RGB", "BMP", RED, RED),
        ("P", "PNG", 1, None),
        ("L", "TIFF", 200, (200, 200, 200)),
        ("LA", "PNG", (90, 255), (90, 90, 90)),
        ("1", "PNG", 1, (255, 255, 255)),
        ("CMYK", "TIFF", (0, 255, 255, 0), RED),
        ("I;16", "PNG", 65535, (255, 255, 255)),  # 16-bit white stays white, not clipped
        ("F", "TIFF", 3.5, (0, 0, 0)),
    ],
)
def test_thumbnails_render_every_pixel_mode(
    tmp_path: Path,
    mode: str,
    fmt: str,
    value: float | tuple[float, ...],
    expected: tuple[int, int, int] | None,
) -> None:
    path = save(Image.new(mode, (20, 10), value), tmp_path / f"img.{fmt.lower()}", fmt)

    result = inspect_file(path)

    assert result.metadata["mode"] == mode
    assert result.thumbnail is not None
    thumb = decode(result.thumbnail)
    assert thumb.size == (20, 10)
    if expected is not None:
        assert is_close(thumb.convert("RGB").getpixel((10, 5)), expected, tolerance=8)


# --- images: refusals -------------------------------------------------------------------------


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    data = encoded(Image.effect_noise((200, 150), 60).convert("RGB"), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CorruptFile, match="truncated") as caught:
        inspect_file(path)
    assert isinstance(caught.value, Invalid)
    with pytest.raises(CorruptFile):
        thumbnail_image(path, THUMBNAIL_MAX_SIDE)


def test_png_magic_with_garbage_is_corrupt_not_binary(tmp_path: Path) -> None:
    path = tmp_path / "liar.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(7).randbytes(200))

    with pytest.raises(CorruptFile, match="PNG"):
        inspect_file(path)


def bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR is patched to claim `width` x `height`, with a valid CRC."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), data (13), CRC (4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def test_decompression_bomb_header_is_refused_as_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(100_000, 100_000))
    limit_before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(ImageTooLarge) as caught:
        inspect_file(path)
    assert isinstance(caught.value, PayloadTooLarge)
    assert limit_before == Image.MAX_IMAGE_PIXELS  # the process-wide limit is put back


@pytest.mark.parametrize("max_pixels", [6_000, 9_999, 1_000])
def test_max_pixels_refuses_anything_over_the_limit(tmp_path: Path, max_pixels: int) -> None:
    # 10 000 pixels: just over, between Pillow's warning and error thresholds, and far over.
    path = save(Image.new("RGB", (100, 100)), tmp_path / "sq.png", "PNG")

    with pytest.raises(ImageTooLarge):
        inspect_file(path, max_pixels=max_pixels)
    with pytest.raises(ImageTooLarge):
        resize_image(path, 10, 10, max_pixels=max_pixels)
    assert inspect_file(path, max_pixels=10_000).metadata["width"] == 100


def test_gif_frame_count_is_bounded(tmp_path: Path) -> None:
    frames = [Image.new("L", (50, 50), shade) for shade in range(0, 200, 20)]
    path = tmp_path / "many.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=10)

    assert inspect_file(path).metadata["frames"] == 10
    with pytest.raises(ImageTooLarge, match="frames"):
        inspect_file(path, max_pixels=2_500 * 2)  # budget: 4 x limit = 8 frames


# --- non-images -------------------------------------------------------------------------------


def test_semicolon_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "people.txt"
    path.write_text("name;age;city\nAlice;30;Paris\nBob;25;Berlin\nChloé;41;Lyon\n")

    result = inspect_file(path)

    assert (result.kind, result.mime_type) == ("csv", "text/csv")
    assert result.metadata == {
        "delimiter": ";",
        "hasHeader": True,
        "rows": 3,
        "columns": 3,
        "encoding": "utf-8",
    }
    assert result.thumbnail is None


def test_csv_rows_are_counted_past_the_sniffing_prefix(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    body = "".join(f'{i},{i * 3},"item, number {i}"\n' for i in range(80_000))
    path.write_text("id,value,label\n" + body)
    assert path.stat().st_size > TEXT_SNIFF_BYTES

    result = inspect_file(path)

    assert result.metadata["rows"] == 80_000
    assert (result.metadata["delimiter"], result.metadata["columns"]) == (",", 3)


def test_tab_separated_without_header(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("1\t2.5\t3\n4\t5.5\t6\n")

    assert inspect_file(path).metadata == {
        "delimiter": "\t",
        "hasHeader": False,
        "rows": 2,
        "columns": 3,
        "encoding": "utf-8",
    }


def test_json_array_is_json_not_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('[1, 2, 3,\n {"a": [4, 5]}]\n')

    result = inspect_file(path)

    assert (result.kind, result.mime_type) == ("json", "application/json")
    assert result.metadata == {"topLevelType": "array", "size": 4}


def test_json_object_with_bom_counts_keys(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1, "b": {"c": 2}}')

    assert inspect_file(path).metadata == {"topLevelType": "object", "size": 2}


def test_broken_json_is_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,\n')

    result = inspect_file(path)

    assert result.mime_type == "text/plain"
    assert result.metadata == {"lines": 1, "encoding": "utf-8"}


def test_plain_text_counts_lines(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("Hello world.\nThis is a note\nwithout a final newline")

    result = inspect_file(path)

    assert (result.kind, result.mime_type) == ("text", "text/plain")
    assert result.metadata == {"lines": 3, "encoding": "utf-8"}


def test_random_bytes_are_binary(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(random.Random(1).randbytes(4096))

    result = inspect_file(path)

    assert (result.kind, result.mime_type) == ("binary", "application/octet-stream")
    assert result.metadata == {}
    assert result.thumbnail is None


@pytest.mark.parametrize("fmt", ["ICO", "PDF"])
def test_formats_outside_the_allow_list_are_binary(tmp_path: Path, fmt: str) -> None:
    path = save(Image.new("RGB", (32, 32), RED), tmp_path / "x.png", fmt)

    result = inspect_file(path)

    assert result.mime_type == "application/octet-stream"
    with pytest.raises(CorruptFile, match="not an image"):
        thumbnail_image(path, THUMBNAIL_MAX_SIDE)


def test_empty_file_is_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")

    assert inspect_file(path).metadata == {"lines": 0, "encoding": "utf-8"}


def test_sha256_is_lowercase_hex_of_the_content(tmp_path: Path) -> None:
    path = tmp_path / "abc"
    path.write_bytes(b"abc")

    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 5)
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\evil.exe", "evil.exe"),
        ("\u202egnp.exe", "gnp.exe"),
        ("report\u2066\u2069.pdf", "report.pdf"),
        ("line\r\nbreak\x00.txt", "linebreak.txt"),
        ("  ..hidden", "hidden"),
        ("trailing. . ", "trailing"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC: one code point, as other systems expect
        ("dir/", "dir"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("\u200b\u200b", "upload"),
        ("ok name (1).jpg", "ok name (1).jpg"),
    ],
)
def test_sanitise_name(raw: str | None, expected: str) -> None:
    assert sanitise_name(raw) == expected


def test_sanitise_name_fallback_is_configurable() -> None:
    assert sanitise_name("/", fallback="upload.bin") == "upload.bin"


def test_sanitise_name_bounds_length_keeping_the_extension() -> None:
    name = sanitise_name("a" * 500 + ".tar.gz")

    assert len(name) == MAX_NAME_CHARS
    assert name.endswith("a.gz")
    assert sanitise_name("b" * 500) == "b" * MAX_NAME_CHARS
    assert sanitise_name("x." + "y" * 500) == ("x." + "y" * 500)[:MAX_NAME_CHARS]


# --- image processing for file nodes ----------------------------------------------------------


def test_resize_fits_the_box_keeping_aspect_and_format(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (400, 200), (0, 0, 255, 255)), tmp_path / "w.png", "PNG")

    data, fmt = resize_image(path, 100, 100)
    assert fmt == "PNG"
    assert decode(data).size == (100, 50)

    data, _ = resize_image(path, 1000, 1000)  # resize enlarges; thumbnails do not
    assert decode(data).size == (1000, 500)


def test_resize_shows_the_photo_upright(tmp_path: Path) -> None:
    data, fmt = resize_image(sideways_jpeg(tmp_path / "p.jpg"), 100, 100)

    out = decode(data)
    assert (fmt, out.format, out.size) == ("JPEG", "JPEG", (50, 100))
    assert is_close(out.getpixel((40, 10)), RED)
    assert is_close(out.getpixel((10, 10)), BLUE)
    assert ORIENTATION not in out.getexif()  # not turned a second time by viewers


def test_thumbnail_image_never_enlarges_and_keeps_format(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (60, 30), RED), tmp_path / "s.bmp", "BMP")

    data, fmt = thumbnail_image(path, 200)
    assert (fmt, decode(data).size) == ("BMP", (60, 30))
    data, _ = thumbnail_image(path, 20)
    assert decode(data).size == (20, 10)


def test_convert_rgba_png_to_jpeg_flattens_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 10, 20))
    path = save(img, tmp_path / "t.png", "PNG")

    data, fmt = convert_image(path, "jpg", quality=90)

    out = decode(data)
    assert (fmt, out.format, out.mode) == ("JPEG", "JPEG", "RGB")
    assert is_close(out.getpixel((3, 10)), RED)
    assert is_close(out.getpixel((16, 10)), (255, 255, 255))


@pytest.mark.parametrize("target", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_convert_palette_gif_to_every_format(tmp_path: Path, target: str) -> None:
    frames = [Image.new("RGB", (16, 8), colour) for colour in (GREEN, RED)]
    path = tmp_path / "a.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])

    data, fmt = convert_image(path, target.lower(), 80)

    out = decode(data)
    assert (fmt, out.format, out.size) == (target, target, (16, 8))
    assert is_close(out.convert("RGB").getpixel((8, 4)), GREEN)  # the first frame


def test_processing_refuses_bad_arguments_and_non_images(tmp_path: Path) -> None:
    png = save(Image.new("RGB", (4, 4)), tmp_path / "a.png", "PNG")
    text = tmp_path / "a.txt"
    text.write_text("not an image")

    with pytest.raises(Invalid, match="'ico'"):
        convert_image(png, "ico", 80)
    with pytest.raises(Invalid, match="quality"):
        convert_image(png, "jpeg", 0)
    with pytest.raises(Invalid, match="width"):
        resize_image(png, 0, 10)
    with pytest.raises(CorruptFile):
        resize_image(text, 10, 10)
