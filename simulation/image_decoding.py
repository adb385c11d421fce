"""Opening untrusted image bytes safely: only allow-listed formats, a decompression-bomb limit
on pixels (and on GIF frames), never accepting truncated data, one decode at a time; and the
facts an image's header and EXIF give (orientation, displayed size, frames, dpi, MIME type).

simulation.inspection and simulation.images decode through here; nothing else opens an image.
"""

from __future__ import annotations

import math
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from PIL import ExifTags, Image, ImageFile

from flowstage.simulation.errors import Invalid, PayloadTooLarge

__all__ = [
    "ALLOWED_IMAGE_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "CorruptFile",
    "ImageTooLarge",
    "check_positive",
    "count_frames",
    "decode_errors",
    "decoded_image",
    "displayed_size",
    "dpi_of",
    "exif_orientation",
    "image_mime",
    "open_image",
    "pillow_limits",
]


class ImageTooLarge(PayloadTooLarge):
    """The image (or the work asked of it) exceeds the pixel limit: a decompression bomb."""


class CorruptFile(Invalid):
    """The bytes claim an image format, or were handed to an image node, but do not decode."""


# About 67 megapixels: every phone and most cameras fit (48 MP = 8064x6048), while the decoded
# RGBA buffer stays near 256 MiB. The server passes its configured value.
DEFAULT_MAX_PIXELS: Final = 64 * 1024 * 1024

# Formats we decode. Pillow can open dozens more (EPS runs Ghostscript, some have had parser
# CVEs); those are served as opaque binary instead.
ALLOWED_IMAGE_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

# GIF frames can only be counted by decoding each one; a tiny file can declare thousands of
# full-screen frames, so the total decoded while counting is bounded too.
_FRAME_BUDGET_FACTOR: Final = 4

_MAGIC_BYTES: Final = 32
# BMP's magic is only "BM", which plain text can start with; the DIB header size narrows it.
_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
# EXIF orientations 5 to 8 turn the image a quarter: its displayed width is its stored height.
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

# What Pillow raises for undecodable input (OSError covers "image file is truncated" and
# decoder errors; SyntaxError is Pillow's "not this format"/"broken PNG").
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_BOMB_ERRORS: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# Image.MAX_IMAGE_PIXELS and the warning filters are process-wide and the server decodes in
# worker threads, so decodes take turns. One image at a time also bounds the memory that
# decoding can take to one image of `max_pixels`. Re-entrant so helpers may nest.
_PILLOW_LOCK: Final = threading.RLock()


@contextmanager
def pillow_limits(max_pixels: int) -> Iterator[None]:
    """Hold while opening or decoding: Pillow's pixel limit set to `max_pixels`, its bomb
    warning an error, one decode in the process at a time."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        # Pillow only *warns* between 1x and 2x its limit; a warning is not a refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow's other warnings (malformed EXIF or MPO headers) describe images it still
        # decodes; whether such a file is accepted must not depend on the warning filters.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


@contextmanager
def decode_errors(fmt: str) -> Iterator[None]:
    """Pillow's errors while decoding a `fmt` image, as ImageTooLarge or CorruptFile."""
    try:
        yield
    except _BOMB_ERRORS as exc:
        raise ImageTooLarge(f"The {fmt} image is too large to decode safely: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptFile(f"The {fmt} image is corrupt or truncated: {exc}") from exc


def open_image(fh: IO[bytes], max_pixels: int) -> ImageFile.ImageFile | None:
    """Open (header only) an image of an allowed format; None when the bytes neither are one
    nor claim to be one. Call with `pillow_limits` held."""
    head = fh.read(_MAGIC_BYTES)
    fh.seek(0)
    claimed = _claimed_image_format(head)
    try:
        img = Image.open(fh, formats=ALLOWED_IMAGE_FORMATS)
    except _BOMB_ERRORS as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from exc
    except _DECODE_ERRORS as exc:
        if claimed is None:
            return None
        raise CorruptFile(
            # Not {exc}: Pillow's message names the server's temporary path.
            f"The file starts like a {claimed} image but cannot be decoded ({type(exc).__name__})."
        ) from exc
    width, height = img.size
    # Also enforced here, exactly, whatever the warning filters say.
    if width * height > max_pixels:
        img.close()
        raise ImageTooLarge(
            f"The image is {width}x{height} ({width * height} pixels); "
            f"the limit is {max_pixels} pixels."
        )
    return img


@contextmanager
def decoded_image(
    path: Path, max_pixels: int, *, draft_box: tuple[int, int] | None = None
) -> Iterator[tuple[ImageFile.ImageFile, int | None]]:
    """A loaded allowed image (first frame) and its EXIF orientation, for processing."""
    check_positive(max_pixels=max_pixels)
    with path.open("rb") as fh, pillow_limits(max_pixels):
        img = open_image(fh, max_pixels)
        if img is None:
            allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
            raise CorruptFile(f"The file is not an image in one of the formats {allowed}.")
        with img, decode_errors(img.format or "unknown"):
            if draft_box is not None and img.format in ("JPEG", "MPO"):
                # Decoding at a smaller DCT scale: at least the box, whichever way it is turned.
                side = max(draft_box)
                img.draft(None, (side, side))
            img.load()
            yield img, exif_orientation(img)


def _claimed_image_format(head: bytes) -> str | None:
    """The allowed format the magic bytes announce, so a broken PNG is "corrupt", not binary."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return "BMP"
    return None


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1-8) of a loaded image, or None when it has none or it is broken."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation)
    except _DECODE_ERRORS:
        # Broken EXIF must not reject pixels that decode; the image is shown as stored.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def displayed_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """The (width, height) an image of stored `size` shows once turned by `orientation`."""
    width, height = size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def count_frames(img: ImageFile.ImageFile, max_pixels: int) -> int:
    """How many frames an opened image has; ImageTooLarge when counting a GIF's would decode
    more than a few images' worth of pixels."""
    if img.format != "GIF":
        # PNG (APNG), WebP, TIFF and MPO declare or index their frames without decoding them.
        return max(1, int(getattr(img, "n_frames", 1)))
    frame_pixels = img.size[0] * img.size[1]
    budget = _FRAME_BUDGET_FACTOR * max_pixels
    count = 1
    while True:
        try:
            img.seek(count)
        except EOFError:
            break
        count += 1
        if count * frame_pixels > budget:
            raise ImageTooLarge(
                f"The animation has more than {count - 1} frames of {img.size[0]}x"
                f"{img.size[1]}; decoding it would exceed {budget} pixels."
            )
    img.seek(0)
    return count


def dpi_of(raw: object) -> list[float] | None:
    """Pillow's `info["dpi"]` as [x, y] rounded as the user set it, or None when unusable."""
    if not isinstance(raw, tuple) or len(raw) != 2:
        return None
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    # PNG stores pixels per metre, so 72 dpi comes back as 72.009; nobody means the 0.009.
    return [round(v, 1) for v in values]


def image_mime(fmt: str) -> str:
    """The MIME type of a Pillow format name."""
    Image.init()
    return Image.MIME.get(fmt, "application/octet-stream")


def check_positive(**values: int) -> None:
    """Invalid naming the first argument below 1."""
    for name, value in values.items():
        if value < 1:
            raise Invalid(f"{name} must be a positive integer, not {value}.")

