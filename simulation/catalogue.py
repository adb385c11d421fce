"""The node-type catalogue: every kind of node an editor can place, with its handles,
config schema, defaults and timing profile.

Pure data. The editing API validates graphs against it, the engine reads timing profiles
and failure rates from it, and `GET /api/node-types` serves it as it is.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "CATALOGUE",
    "Fixed",
    "Handle",
    "LogNormal",
    "NodeType",
    "Timing",
    "Uniform",
]


class Handle(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    label: str


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


_IN = (Handle("in", "Input"),)
_OUT = (Handle("out", "Output"),)
_STR = {"type": "string"}
_INT = {"type": "integer"}
_HTTP_METHODS = {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}
# Uploaded files a file node works on when the workflow runs (ids from POST /api/files/upload).
_FILE_IDS = {"type": "array", "items": {"type": "string"}}

_TYPES: tuple[NodeType, ...] = (
    NodeType(
        type="manual_trigger",
        label="Manual trigger",
        category="trigger",
        description="Starts the workflow when a user presses Run; emits the execute inputs.",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema({"payload": {"type": "object"}}),
        defaults={"payload": {}},
        timing=Fixed(ms=20),
    ),
    NodeType(
        type="webhook_trigger",
        label="Webhook",
        category="trigger",
        description="Starts the workflow on an incoming HTTP request; emits its method, headers and body.",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema({"path": _STR, "method": _HTTP_METHODS}, ("path",)),
        defaults={"path": "/hooks/incoming", "method": "POST"},
        timing=Fixed(ms=30),
    ),
    NodeType(
        type="schedule_trigger",
        label="Schedule",
        category="trigger",
        description="Starts the workflow on a cron schedule; emits the scheduled time.",
        inputs=(),
        outputs=_OUT,
        config_schema=_schema({"cron": _STR, "timezone": _STR}, ("cron",)),
        defaults={"cron": "0 * * * *", "timezone": "UTC"},
        timing=Fixed(ms=20),
    ),
    NodeType(
        type="http_request",
        label="HTTP request",
        category="integration",
        description="Calls an HTTP API; outputs the status, headers and JSON body.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "url": {"type": "string", "minLength": 1},
                "method": _HTTP_METHODS,
                "headers": {"type": "object", "additionalProperties": _STR},
                "timeoutMs": {"type": "integer", "minimum": 1},
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
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "connection": _STR,
                "query": {"type": "string", "minLength": 1},
                "maxRows": {"type": "integer", "minimum": 1},
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
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {"to": {"type": "array", "items": _STR}, "subject": _STR, "body": _STR},
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
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "model": _STR,
                "prompt": {"type": "string", "minLength": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "maxTokens": {"type": "integer", "minimum": 1},
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
        inputs=_IN,
        outputs=(Handle("true", "True"), Handle("false", "False")),
        config_schema=_schema(
            {"expression": _STR, "trueProbability": {"type": "number", "minimum": 0, "maximum": 1}},
        ),
        defaults={"expression": "input.ok == true", "trueProbability": 0.5},
        timing=Fixed(ms=10),
    ),
    NodeType(
        type="merge",
        label="Merge",
        category="logic",
        description="Waits for every incoming connection and combines their data.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"mode": {"type": "string", "enum": ["append", "object"]}}),
        defaults={"mode": "append"},
        timing=Fixed(ms=10),
    ),
    NodeType(
        type="delay",
        label="Delay",
        category="logic",
        description="Waits a fixed time, then passes its input on unchanged.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"ms": {"type": "integer", "minimum": 0, "maximum": 86_400_000}}),
        defaults={"ms": 1000},
        timing=Fixed(ms=1000),
    ),
    NodeType(
        type="transform",
        label="Code / transform",
        category="logic",
        description="Maps its input with a small expression; outputs the mapped items.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {"code": _STR, "language": {"type": "string", "enum": ["javascript", "python", "jsonata"]}},
        ),
        defaults={"code": "return items.map(i => ({...i, processed: true}))", "language": "javascript"},
        timing=Uniform(min_ms=20, max_ms=120),
    ),
    NodeType(
        type="image_resize",
        label="Resize image",
        category="file",
        description="Resizes images to fit a box, keeping the aspect ratio.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "width": {"type": "integer", "minimum": 1, "maximum": 10000},
                "height": {"type": "integer", "minimum": 1, "maximum": 10000},
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
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema({"size": {"type": "integer", "minimum": 16, "maximum": 1024}, "fileIds": _FILE_IDS}),
        defaults={"size": 256},
        timing=Uniform(min_ms=80, max_ms=300),
    ),
    NodeType(
        type="image_convert",
        label="Convert image",
        category="file",
        description="Converts images to another format.",
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "format": {"type": "string", "enum": ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]},
                "quality": {"type": "integer", "minimum": 1, "maximum": 100},
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
        inputs=_IN,
        outputs=_OUT,
        config_schema=_schema(
            {
                "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
                "hasHeader": {"type": "boolean"},
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
        inputs=_IN,
        outputs=(),
        config_schema=_schema({"name": _STR}),
        defaults={"name": "result"},
        timing=Fixed(ms=5),
    ),
)

CATALOGUE: dict[str, NodeType] = {t.type: t for t in _TYPES}

