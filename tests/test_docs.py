"""The documentation a user reads is true to the repository: every link in README.md and docs/
leads to a file (and heading) that exists inside the repository, every `docs/...` pointer in the
code names a real page, and the configuration table says what config/defaults.toml and the
Settings struct say."""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import msgspec
import pytest

from flowstage.actors.runtime import EngineConfig
from flowstage.config import DEFAULTS_FILE, Settings
from flowstage.server.cli import main
from flowstage.simulation.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
_HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*(?:href|src)=\"([^\"]*)\"", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text with code blocks and code spans blanked out: links are not read there."""
    text = _FENCE.sub("", text)
    return _CODE_SPAN.sub("", text)


def links(text: str) -> list[str]:
    prose = _prose(text)
    found = [m.group(1) for m in _INLINE_LINK.finditer(prose)]
    found += [m.group(1) for m in _REFERENCE.finditer(prose)]
    found += [m.group(1) for m in _AUTOLINK.finditer(prose)]
    found += [m.group(1) for m in _HTML_LINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text in lower case, without punctuation
    (letters, digits, `_`, `-` and spaces are kept), each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)  # emphasis markers
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    kept = "".join(c for c in text.lower()
                   if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_the_slug_rules_are_githubs() -> None:
    assert slug("Live events (Server-Sent Events)") == "live-events-server-sent-events"
    assert slug("`flowstage loadtest`: options") == "flowstage-loadtest-options"
    assert slug("Limits, rate limiting and CORS") == "limits-rate-limiting-and-cors"
    assert slug("Résumé → PDF") == "résumé--pdf"
    assert slug("GET /api/runs/{runId}") == "get-apirunsrunid"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_links_are_found_in_prose_only() -> None:
    text = ("See [the guide](docs/api.md#errors) and [x][ref].\n\n[ref]: docs/sse.md\n"
            "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n<https://example.com>\n")
    assert links(text) == ["docs/api.md#errors", "docs/sse.md", "https://example.com"]


def test_there_are_pages_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/api.md", "docs/sse.md", "docs/loadtest.md",
            "docs/configuration.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = []
    for target in links(text):
        if not target:
            problems.append("an empty link")
            continue
        if _SCHEME.match(target) or target.startswith("//"):
            problems.append(f"{target}: points outside the repository")
            continue
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part.split("?", 1)[0])
        if path_part.startswith("/"):
            problems.append(f"{target}: an absolute path (links must be relative)")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: leaves the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if fragment:
            if resolved.suffix != ".md":
                problems.append(f"{target}: a #fragment on a file that has no headings")
            elif unquote(fragment) not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert problems == []


_CODE_DIRS = ("flowstage", "server", "actors", "simulation", "config", "tests", "bench", ".ci")
_DOC_POINTER = re.compile(r"\bdocs/[\w./-]*\w")


def test_every_docs_pointer_in_the_code_names_a_page() -> None:
    files = [ROOT / "pyproject.toml", ROOT / "Makefile"]
    for folder in _CODE_DIRS:
        files.extend(p for p in (ROOT / folder).rglob("*") if p.is_file()
                     and p.suffix in (".py", ".toml", ".md", "")
                     and not {"__pycache__", "node_modules"} & set(p.parts))
    missing = []
    for path in files:
        for match in _DOC_POINTER.finditer(path.read_text(encoding="utf-8", errors="replace")):
            if not (ROOT / match.group(0)).exists():
                missing.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert missing == []


# --- the configuration table -------------------------------------------------------------------


def _bounds(kind: Any) -> str:
    ge, gt, le = getattr(kind, "ge", None), getattr(kind, "gt", None), getattr(kind, "le", None)
    if ge is not None and le is not None:
        return f", {ge}–{le}"
    if gt is not None:
        return f" > {gt}"
    if ge is not None:
        return f" ≥ {ge}"
    return ""


def type_cell(kind: Any) -> str:
    """How the table writes a setting's type, from the Settings struct."""
    match kind:
        case msgspec.inspect.StrType():
            return "string"
        case msgspec.inspect.BoolType():
            return "boolean"
        case msgspec.inspect.IntType():
            return "integer" + _bounds(kind)
        case msgspec.inspect.FloatType():
            return "number" + _bounds(kind)
        case msgspec.inspect.LiteralType(values=values):
            return "one of " + ", ".join(f"`{v}`" for v in values)
        case msgspec.inspect.ListType(item_type=item):
            return f"list of {type_cell(item)}"
        case msgspec.inspect.DictType(value_type=value):
            return f"table of {type_cell(value)}"
    raise AssertionError(f"no table wording for {kind!r}: add it to type_cell")


def default_cell(value: Any) -> str:
    """How the table writes a default from defaults.toml (as a TOML value, JSON-spelt)."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"`{value!r}`"
    return f"`{json.dumps(value)}`"


def _serve_flags(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    return set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))


def _table(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_configuration_table_is_every_setting_with_its_default_type_and_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    header = "| setting | type | default | environment | flag | meaning |"
    table = _table(text, header)
    with DEFAULTS_FILE.open("rb") as f:
        defaults = tomllib.load(f)
    flags = _serve_flags(capsys)
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    expected = {}
    for field in info.fields:
        flag = f"--{field.name.replace('_', '-')}"
        expected[field.name] = [
            f"`{field.name}`", type_cell(field.type), default_cell(defaults[field.name]),
            f"`FLOWSTAGE_{field.name.upper()}`", f"`{flag}`" if flag in flags else "",
        ]
    assert sorted(table) == sorted(expected), "settings missing from or unknown to the table"
    wrong = {name: f"| {' | '.join(cells)} | ... |" for name, cells in expected.items()
             if table[name][:5] != cells}
    assert wrong == {}, "rows that differ from defaults.toml / Settings (expected shown)"
    assert all(row[5] for row in table.values()), "every setting says what it means"


def test_the_node_type_table_of_the_api_guide_is_the_catalogue() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = _table(text, "| type | category | inputs | outputs |")
    expected = {
        name: [f"`{name}`", kind.category, ", ".join(kind.input_ids()) or "–",
               ", ".join(kind.output_ids()) or "–"]
        for name, kind in CATALOGUE.items()
    }
    assert {name: row[:4] for name, row in table.items()} == expected


def test_the_engine_tuning_the_configuration_page_states_is_engine_configs() -> None:
    paragraph = (ROOT / "docs" / "configuration.md").read_text().split("The engine's tuning is not a setting.")[1]
    paragraph = " ".join(paragraph.split("\n\n")[0].split())
    config = EngineConfig()
    stated = (f"progress steps of {config.progress_step:.0%}".replace("%", " %"),
              f"every {config.progress_min_interval * 1000:.0f} ms of simulated time",
              f"persisted about every {config.flush_interval * 1000:.0f} ms",
              f"{config.retain_finished:,} finished runs kept in memory",
              "a one-hour cap" if config.max_duration_ms == 3_600_000 else "(the cap changed)")
    assert [text for text in stated if text not in paragraph] == []
