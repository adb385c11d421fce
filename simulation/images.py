"""The work image nodes do on a decoded image: resize, thumbnail and convert, each shown
upright, and the WebP preview an uploaded image gets. Decoding (and its limits) is
simulation.image_decoding's; this module turns pixels into encoded bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final

from PIL import Image

from flowstage.simulation.errors import Invalid
from flowstage.simulation.image_decoding import (
    ALLOWED_IMAGE_FORMATS,
    DEFAULT_MAX_PIXELS,
    ImageTooLarge,
    check_positive,
    decoded_image,
    displayed_size,
)

__all__ = ["THUMBNAIL_MAX_SIDE", "convert_image", "preview", "resize_image", "thumbnail_image"]

# An upload's preview (its `thumbnailUrl`): at most this many pixels a side, WebP at this quality.
THUMBNAIL_MAX_SIDE: Final = 256
_THUMBNAIL_QUALITY: Final = 80

# The transposition that shows an image upright for each EXIF orientation; the same table as
# PIL.ImageOps.exif_transpose. Applied here after resizing (cheaper than before) and from one
# orientation value read once, so reported sizes and pixels always agree, TIFF included.
_ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_FORMAT_ALIASES: Final = {"JPG": "JPEG", "TIF": "TIFF"}
# Formats that store an ICC profile; elsewhere it would be silently dropped (or rejected).
_ICC_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})


def preview(img: Image.Image, orientation: int | None) -> bytes:
    """A loaded image's WebP preview: shown upright, first frame, longest side at most
    THUMBNAIL_MAX_SIDE, never enlarged."""
    small = _render(img, orientation, (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), upscale=False)
    return _encode(small, "WEBP", _THUMBNAIL_QUALITY, icc=_icc_for(img, small))


def resize_image(
    src: Path,
    width: int,
    height: int,
    *,
    quality: int = 90,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, str]:
    """The image scaled (up or down) to fit inside `width` x `height`, aspect ratio kept,
    shown upright; returns the encoded bytes and Pillow's format name (the source's)."""
    check_positive(width=width, height=height)
    _check_quality(quality)
    if width * height > max_pixels:
        raise ImageTooLarge(f"A {width}x{height} box exceeds the limit of {max_pixels} pixels.")
    with decoded_image(src, max_pixels, draft_box=(width, height)) as (img, orientation):
        fmt = _output_format(img.format)
        out = _render(img, orientation, (width, height), upscale=True)
        return _encode(out, fmt, quality, icc=_icc_for(img, out)), fmt


def thumbnail_image(
    src: Path, size: int, *, quality: int = 90, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """Like `resize_image` into a `size` square, but never enlarging: a file node's thumbnail,
    in the source's format (unlike the WebP `preview` of an upload)."""
    check_positive(size=size)
    _check_quality(quality)
    box = (size, size)
    with decoded_image(src, max_pixels, draft_box=box) as (img, orientation):
        fmt = _output_format(img.format)
        out = _render(img, orientation, box, upscale=False)
        return _encode(out, fmt, quality, icc=_icc_for(img, out)), fmt


def convert_image(
    src: Path, fmt: str, quality: int = 90, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """The image (upright, first frame) re-encoded as `fmt`, one of `ALLOWED_IMAGE_FORMATS`
    (case-insensitive; `jpg` and `tif` accepted). `quality` (1-100) applies to JPEG and WEBP.
    Transparency becomes white in JPEG."""
    target = _FORMAT_ALIASES.get(fmt.upper(), fmt.upper())
    if target not in ALLOWED_IMAGE_FORMATS:
        allowed = ", ".join(ALLOWED_IMAGE_FORMATS)
        raise Invalid(f"Cannot convert to {fmt!r}; the formats are {allowed}.")
    _check_quality(quality)
    with decoded_image(src, max_pixels) as (img, orientation):
        out = _render(img, orientation, None, upscale=False)
        return _encode(out, target, quality, icc=_icc_for(img, out)), target


def _output_format(source_format: str | None) -> str:
    if source_format == "MPO":
        # A multi-picture JPEG; only its first picture is processed.
        return "JPEG"
    Image.init()
    if source_format in ALLOWED_IMAGE_FORMATS and source_format in Image.SAVE:
        return source_format
    return "PNG"


def _fit(size: tuple[int, int], box: tuple[int, int], *, upscale: bool) -> tuple[int, int]:
    width, height = size
    scale = min(box[0] / width, box[1] / height)
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _render(
    img: Image.Image,
    orientation: int | None,
    box: tuple[int, int] | None,
    *,
    upscale: bool,
) -> Image.Image:
    """The loaded first frame in a resizable mode, fitted into `box` as displayed, upright."""
    working = _working_mode(img)
    out = working
    if box is not None:
        width, height = _fit(displayed_size(working.size, orientation), box, upscale=upscale)
        # Resize the stored pixels to the turned target, then turn the small result.
        stored_target = displayed_size((width, height), orientation)
        if stored_target != working.size:
            # reducing_gap: a cheap integer reduction first, then Lanczos on the remainder.
            out = working.resize(stored_target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation or 1)
    if transpose is not None:
        out = out.transpose(transpose)
    # May be `img` itself; callers encode it before closing the source.
    return out


def _working_mode(img: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA: what resampling and every output format handle."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode.startswith("I;16"):
        # 16-bit samples scaled to 8 bits (convert("L") would clip everything above 255).
        return img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("I", "F"):
        # No fixed range for 32-bit samples: stretch what is there to 0..255.
        low, high = img.getextrema()
        assert isinstance(low, int | float) and isinstance(high, int | float)
        scale = 255 / (high - low) if high > low else 0.0
        return img.point(lambda v: (v - low) * scale).convert("L")
    if mode == "1":
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    # P, PA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV.
    return img.convert("RGBA" if img.has_transparency_data else "RGB")


def _encode(img: Image.Image, fmt: str, quality: int, *, icc: bytes | None) -> bytes:
    if fmt == "JPEG" and img.mode in ("RGBA", "LA"):
        # JPEG has no alpha: composite over white rather than expose the colours under
        # transparent pixels (often black or garbage).
        base_mode = img.mode[:-1]
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        background.alpha_composite(img.convert("RGBA"))
        img = background.convert(base_mode)
    elif fmt in ("BMP", "GIF") and img.mode == "LA":
        img = img.convert("RGBA")
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "WEBP":
        options["method"] = 4  # libwebp's speed/size middle ground
    if icc is not None and fmt in _ICC_FORMATS:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _icc_for(source: Image.Image, out: Image.Image) -> bytes | None:
    """The source's colour profile when it still describes the output's channels (an RGB
    profile for RGB(A), a grey one for L(A)); a CMYK profile on converted RGB would be wrong."""
    icc = source.info.get("icc_profile")
    if not isinstance(icc, bytes) or not icc:
        return None
    same_channels = source.mode.removesuffix("A") == out.mode.removesuffix("A")
    return icc if same_channels else None


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise Invalid(f"quality must be between 1 and 100, not {quality}.")
