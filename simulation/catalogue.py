"""The node-type catalogue: every kind of node an editor can place, with its handles,
config schema, defaults, timing profile and palette look (icon, colour, handle sides).

Pure data. The editing API validates graphs against it (and names unlabelled nodes after their
type), the engine reads timing profiles and failure rates from it, and `GET /api/node-types`
serves it as it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "CATALOGUE",
    "Category",
    "Fixed",
    "Handle",
    "LogNormal",
    "NodeType",
    "Timing",
    "Uniform",
]

HandlePosition = Literal["left", "right", "top", "bottom"]


class Handle(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    label: str
    # The node's side an editor draws the handle on (React Flow's `Position`).
    position: HandlePosition


class Fixed(msgspec.Struct, frozen=True, tag="fixed", tag_field="kind", rename="camel"):
    """Always the same duration."""

    ms: float


class Uniform(msgspec.Struct, frozen=True, tag="uniform", tag_field="kind", rename="camel"):
    """Any duration between two bounds, equally likely."""

    min_ms: float
    max_ms: float


class LogNormal(msgspec.Struct, frozen=True, tag="lognormal", tag_field="kind", rename="camel"):
    """Mostly near the median with a long tail, as network calls are; capped at `max_ms`."""

    median_ms: float
    sigma: float
    max_ms: float


Timing = Fixed | Uniform | LogNormal
Category = Literal["trigger", "integration", "logic", "file", "output"]


class NodeType(msgspec.Struct, frozen=True, rename="camel"):
    type: str
    label: str
    category: Category
    description: str
    # An icon's name (`play`, `globe`, `database`, ...): an editor maps it to its own icon set.
    icon: str
    color: Annotated[str, Meta(pattern="^#[0-9a-f]{6}$")]
    inputs: tuple[Handle, ...]
    outputs: tuple[Handle, ...]
    config_schema: dict[str, Any]
    defaults: dict[str, Any]
    timing: Timing

    def input_ids(self) -> tuple[str, ...]:
        return tuple(h.id for h in self.inputs)

    def output_ids(self) -> tuple[str, ...]:
        return tuple(h.id for h in self.outputs)


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _prop(title: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A config property as a generated form shows it: a title for its label, a description
    for its help text."""
    return {**schema, "title": title, "description": description}


_IN = (Handle("in", "Input", "left"),)
_OUT = (Handle("out", "Output", "right"),)
_STR = {"type": "string"}
_HTTP_METHODS = {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}
_METHOD = _prop("Method", "The HTTP method.", _HTTP_METHODS)
# Uploaded files a file node works on when the workflow runs (ids from POST /api/files/upload).
_FILE_IDS = _prop("Files", "Ids of uploaded files to work on (from POST /api/files/upload).",
                  {"type": "array", "items": {"type": "string"}})

_TYPES: tuple[NodeType, ...] = (
    NodeType(
        type="manual_trigger",
        label="Manual trigger",
        category="trigger",
        description="Starts the workflow when a user presses Run; emits the execute inputs.",
        icon="play", color="#2e7d32",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema({"payload": _prop("Payload", "Data emitted when the run starts.", {"type": "object"})}),
        defaults={"payload": {}},
        timing=Fixed(ms=20),
    ),
    NodeType(
        type="webhook_trigger",
        label="Webhook",
        category="trigger",
        description="Starts the workflow on an incoming HTTP request; emits its method, headers and body.",
        icon="webhook", color="#2e7d32",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema(
            {"path": _prop("Path", "The URL path that starts the workflow.", _STR), "method": _METHOD},
            ("path",),
        ),
        defaults={"path": "/hooks/incoming", "method": "POST"},
        timing=Fixed(ms=30),
    ),
    NodeType(
        type="schedule_trigger",
        label="Schedule",
        category="trigger",
        description="Starts the workflow on a cron schedule; emits the scheduled time.",
        icon="clock", color="#2e7d32",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema(
            {
                "cron": _prop("Cron expression", "When to start, e.g. `0 * * * *` for every hour.", _STR),
                "timezone": _prop("Time zone", "The IANA time zone the schedule is read in.", _STR),
            },
            ("cron",),
        ),
        defaults={"cron": "0 * * * *", "timezone": "UTC"},
        timing=Fixed(ms=20),
    ),
    NodeType(
        type="http_request",
        label="HTTP request",
        category="integration",
        description="Calls an HTTP API; outputs the status, headers and JSON body.",
        icon="globe", color="#1565c0",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "url": _prop("URL", "The address to call.", {"type": "string", "minLength": 1}),
                "method": _METHOD,
                "headers": _prop("Headers", "Request headers, by name.",
                                 {"type": "object", "additionalProperties": _STR}),
                "timeoutMs": _prop("Timeout (ms)", "Give up after this many milliseconds.",
                                   {"type": "integer", "minimum": 1}),
            },
            ("url",),
        ),
        defaults={"url": "https://api.example.com/items", "method": "GET", "headers": {}, "timeoutMs": 10000},
        timing=LogNormal(median_ms=350, sigma=0.5, max_ms=5000),
    ),
    NodeType(
        type="database_query",
        label="Database query",
        category="integration",
        description="Runs a SQL query; outputs the rows and their count.",
        icon="database", color="#1565c0",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "connection": _prop("Connection", "The database's connection URL.", _STR),
                "query": _prop("Query", "The SQL to run.", {"type": "string", "minLength": 1}),
                "maxRows": _prop("Maximum rows", "Return at most this many rows.", {"type": "integer", "minimum": 1}),
            },
            ("query",),
        ),
        defaults={"connection": "postgres://db/main", "query": "SELECT * FROM customers", "maxRows": 100},
        timing=LogNormal(median_ms=120, sigma=0.6, max_ms=3000),
    ),
    NodeType(
        type="send_email",
        label="Send email",
        category="integration",
        description="Sends an email; outputs the message id and the accepted recipients.",
        icon="mail", color="#1565c0",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "to": _prop("To", "The recipients' addresses.", {"type": "array", "items": _STR}),
                "subject": _prop("Subject", "The message's subject line.", _STR),
                "body": _prop("Body", "The message's text.", _STR),
            },
            ("to", "subject"),
        ),
        defaults={"to": ["team@example.com"], "subject": "Workflow report", "body": ""},
        timing=Uniform(min_ms=200, max_ms=800),
    ),
    NodeType(
        type="llm_prompt",
        label="LLM prompt",
        category="integration",
        description="Sends a prompt to a language model; outputs the text and token counts.",
        icon="sparkles", color="#6a1b9a",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "model": _prop("Model", "The language model's name.", _STR),
                "prompt": _prop("Prompt", "What to ask the model.", {"type": "string", "minLength": 1}),
                "temperature": _prop("Temperature", "0 answers predictably; higher values vary more.",
                                     {"type": "number", "minimum": 0, "maximum": 2}),
                "maxTokens": _prop("Maximum tokens", "The longest answer, in tokens.",
                                   {"type": "integer", "minimum": 1}),
            },
            ("prompt",),
        ),
        defaults={"model": "sim-gpt-small", "prompt": "Summarise the input.", "temperature": 0.7, "maxTokens": 256},
        timing=LogNormal(median_ms=1500, sigma=0.4, max_ms=15000),
    ),
    NodeType(
        type="condition",
        label="Condition",
        category="logic",
        description="Routes its input to the true or the false output.",
        icon="branch", color="#e65100",
        inputs=_IN,
        outputs=(Handle("true", "True", "right"), Handle("false", "False", "right")),
        config_schema=_schema(
            {
                "expression": _prop("Expression", "The test applied to the input.", _STR),
                "trueProbability": _prop("Chance of true", "In the simulation, how often the test passes (0–1).",
                                         {"type": "number", "minimum": 0, "maximum": 1}),
            },
        ),
        defaults={"expression": "input.ok == true", "trueProbability": 0.5},
        timing=Fixed(ms=10),
    ),
    NodeType(
        type="merge",
        label="Merge",
        category="logic",
        description="Waits for every incoming connection and combines their data.",
        icon="merge", color="#e65100",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"mode": _prop(
            "Mode", "`append` lists the inputs' items; `object` keys them by connection.",
            {"type": "string", "enum": ["append", "object"]})}),
        defaults={"mode": "append"},
        timing=Fixed(ms=10),
    ),
    NodeType(
        type="delay",
        label="Delay",
        category="logic",
        description="Waits a fixed time, then passes its input on unchanged.",
        icon="timer", color="#e65100",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"ms": _prop("Wait (ms)", "How long to wait, in milliseconds.",
                                           {"type": "integer", "minimum": 0, "maximum": 86_400_000})}),
        defaults={"ms": 1000},
        timing=Fixed(ms=1000),
    ),
    NodeType(
        type="transform",
        label="Code / transform",
        category="logic",
        description="Maps its input with a small expression; outputs the mapped items.",
        icon="code", color="#e65100",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "code": _prop("Code", "The expression applied to the input's items.", _STR),
                "language": _prop("Language", "The language the code is written in.",
                                  {"type": "string", "enum": ["javascript", "python", "jsonata"]}),
            },
        ),
        defaults={"code": "return items.map(i => ({...i, processed: true}))", "language": "javascript"},
        timing=Uniform(min_ms=20, max_ms=120),
    ),
    NodeType(
        type="image_resize",
        label="Resize image",
        category="file",
        description="Resizes images to fit a box, keeping the aspect ratio.",
        icon="resize", color="#00838f",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "width": _prop("Width", "The box's width, in pixels.",
                               {"type": "integer", "minimum": 1, "maximum": 10000}),
                "height": _prop("Height", "The box's height, in pixels.",
                                {"type": "integer", "minimum": 1, "maximum": 10000}),
                "fileIds": _FILE_IDS,
            },
        ),
        defaults={"width": 800, "height": 600},
        timing=Uniform(min_ms=150, max_ms=600),
    ),
    NodeType(
        type="image_thumbnail",
        label="Thumbnail",
        category="file",
        description="Makes a small preview of each image.",
        icon="image", color="#00838f",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({
            "size": _prop("Size", "The preview's longest side, in pixels.",
                          {"type": "integer", "minimum": 16, "maximum": 1024}),
            "fileIds": _FILE_IDS,
        }),
        defaults={"size": 256},
        timing=Uniform(min_ms=80, max_ms=300),
    ),
    NodeType(
        type="image_convert",
        label="Convert image",
        category="file",
        description="Converts images to another format.",
        icon="convert", color="#00838f",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "format": _prop("Format", "The format to write.",
                                {"type": "string", "enum": ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]}),
                "quality": _prop("Quality", "For lossy formats: 1 (smallest) to 100 (best).",
                                 {"type": "integer", "minimum": 1, "maximum": 100}),
                "fileIds": _FILE_IDS,
            },
        ),
        defaults={"format": "WEBP", "quality": 85},
        timing=Uniform(min_ms=150, max_ms=500),
    ),
    NodeType(
        type="csv_parse",
        label="Parse CSV",
        category="file",
        description="Parses CSV into rows: an uploaded file's (config.fileIds) or its input's text.",
        icon="table", color="#00838f",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "delimiter": _prop("Delimiter", "The one character between fields.",
                                   {"type": "string", "minLength": 1, "maxLength": 1}),
                "hasHeader": _prop("Header row", "Whether the first row names the columns.", {"type": "boolean"}),
                "fileIds": _FILE_IDS,
            },
        ),
        defaults={"delimiter": ",", "hasHeader": True},
        timing=Uniform(min_ms=50, max_ms=400),
    ),
    NodeType(
        type="json_parse",
        label="Parse JSON",
        category="file",
        description="Parses JSON into its value: an uploaded file's (config.fileIds) or its input's text.",
        icon="braces", color="#00838f",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"fileIds": _FILE_IDS}),
        defaults={},
        timing=Uniform(min_ms=20, max_ms=200),
    ),
    NodeType(
        type="output",
        label="Output",
        category="output",
        description="Collects the workflow's result.",
        icon="flag", color="#455a64",
        inputs=_IN,
        outputs=(),
        config_schema=_schema({"name": _prop("Name", "The name the result is kept under.", _STR)}),
        defaults={"name": "result"},
        timing=Fixed(ms=5),
    ),
)

CATALOGUE: dict[str, NodeType] = {t.type: t for t in _TYPES}

