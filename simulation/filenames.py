"""A display name for an uploaded file: what is left of the client's file name once it is safe
to show. The server never uses it as a storage path (files are stored under their id).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_NAME_CHARS", "sanitise_name"]

MAX_NAME_CHARS: Final = 200
# Longer "extensions" are just a dot in a long name; keeping them would eat the whole budget.
_MAX_EXTENSION_CHARS: Final = 16

# Control (Cc), format (Cf: bidi overrides and isolates, zero-width characters, BOM),
# lone surrogates (Cs, which cannot even be encoded) and line/paragraph separators.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_PATH_SEPARATORS: Final = re.compile(r"[/\\]")
_EDGE_JUNK: Final = re.compile(r"^[\s.]+|[\s.]+$")


def sanitise_name(raw: str | None, *, fallback: str = "upload") -> str:
    """A display name for a client-supplied file name, or `fallback` when nothing is left.

    Keeps the last path component (a browser on Windows may send `C:\\dir\\a.txt`), drops
    invisible and direction-changing characters (so `"\\u202egnp.exe"` shows as the `.exe`
    it is), strips leading dots and spaces (no hidden files, no `..`) and trailing ones
    (Windows drops them), NFC-normalises, and keeps at most `MAX_NAME_CHARS` characters while
    preserving the extension.
    """
    if not raw:
        return fallback
    # Filter before splitting and normalising: a stray format character between a letter and
    # its accent would otherwise stop NFC from composing them.
    visible = "".join(ch for ch in raw if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    components = [part for part in _PATH_SEPARATORS.split(visible) if part]
    if not components:
        return fallback
    name = _EDGE_JUNK.sub("", unicodedata.normalize("NFC", components[-1]))
    return _bound_length(name) or fallback


def _bound_length(name: str) -> str:
    if len(name) <= MAX_NAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= _MAX_EXTENSION_CHARS:
        suffix = dot + extension
        # The stem starts with a visible character (edges were stripped), so it stays non-empty.
        return stem[: MAX_NAME_CHARS - len(suffix)].rstrip(". ") + suffix
    return name[:MAX_NAME_CHARS].rstrip(". ")

