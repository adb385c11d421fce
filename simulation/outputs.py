"""Mock outputs per node type: small, realistic, built from the node's inputs and config
and drawn from the node's seeded generator, so a seed replays the same data.

Each generator is a plain function `(NodeContext) -> output` registered in GENERATORS;
the runtime copies this table into its handler registry, where the server may replace an
entry with real work: the image nodes, and `csv_parse`/`json_parse` over uploaded files
(server/processing.py). Mock outputs stay a few hundred bytes: ten thousand runs keep them in
memory at once.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from flowstage.simulation.rng import STREAM_BRANCH, STREAM_OUTPUT, Rng

__all__ = ["GENERATORS", "Generator", "NodeContext", "count_items", "failure_message", "items_of"]

_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Leslie")
_WORDS = ("orders", "customers", "revenue", "latency", "errors", "signups", "refunds", "tickets")
_LIST_KEYS = ("items", "rows", "files", "accepted", "data")


class NodeContext:
    """What a node's work may look at: its config, inputs and a seeded generator."""

    __slots__ = ("config", "input_sources", "inputs", "node_id", "now", "run_id", "run_inputs",
                 "seed", "type", "workflow_id")

    def __init__(self, run_id: str, workflow_id: str, node_id: str, type: str,
                 config: Mapping[str, Any], inputs: list[Any], input_sources: Sequence[str],
                 run_inputs: Mapping[str, Any], seed: int, now: float) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.node_id = node_id
        self.type = type
        self.config = config
        self.inputs = inputs  # one payload per incoming connection, in connection order
        self.input_sources = input_sources  # the source node id of each payload
        self.run_inputs = run_inputs
        self.seed = seed
        self.now = now

    @property
    def input(self) -> Any:
        """The node's input: the run inputs for a node without incoming connections, the
        payload for one connection, the list of payloads for several (fan-in)."""
        if not self.inputs:
            return dict(self.run_inputs)
        return self.inputs[0] if len(self.inputs) == 1 else list(self.inputs)

    def rng(self, stream: int = STREAM_OUTPUT) -> Rng:
        return Rng(self.seed, stream)


Generator = Callable[[NodeContext], Any]


def items_of(value: Any) -> list[Any]:
    """The list of records inside a payload: a list itself, or a dict's items/rows/files/
    body; anything else counts as one record."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            inner = value.get(key)
            if isinstance(inner, list):
                return inner
        body = value.get("body")
        if isinstance(body, (dict, list)):  # a tuple: `dict | list` would build a union per call
            return items_of(body)
        return [value] if value else []
    return [] if value is None else [value]


def count_items(value: Any) -> int:
    return len(items_of(value))


def _manual_trigger(ctx: NodeContext) -> Any:
    return {**ctx.config.get("payload", {}), **ctx.run_inputs}


def _webhook_trigger(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    return {"method": ctx.config.get("method", "POST"), "path": ctx.config.get("path", "/"),
            "headers": {"content-type": "application/json", "x-delivery-id": rng.hex(12)},
            "body": dict(ctx.run_inputs)}


def _schedule_trigger(ctx: NodeContext) -> Any:
    from flowstage.simulation.timefmt import iso_ms  # local: only this trigger needs a clock reading

    # The one time-dependent output: a schedule fires "now" unless the inputs say when.
    when = ctx.run_inputs.get("scheduledAt") or iso_ms(ctx.now)
    return {"cron": ctx.config.get("cron"), "timezone": ctx.config.get("timezone", "UTC"),
            "scheduledAt": when}


def _http_request(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    method = ctx.config.get("method", "GET")
    items = []
    for _ in range(rng.randint(1, 3)):
        bits = rng.next64()  # one draw per record, sliced into its fields
        items.append({"id": 1000 + (bits & 0xFFFF) % 9000, "name": _NAMES[(bits >> 16) % len(_NAMES)],
                      "score": ((bits >> 32) % 100) / 100})
    return {"status": 201 if method == "POST" else 200,
            "headers": {"content-type": "application/json", "x-request-id": f"{rng.next64():016x}"[:12]},
            "body": {"items": items, "received": count_items(ctx.input)}}


_TABLE = re.compile(r"\bfrom\s+([A-Za-z_][\w.]*)", re.IGNORECASE)


def _database_query(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    match = _TABLE.search(str(ctx.config.get("query", "")))
    table = match.group(1) if match else "result"
    count = min(int(ctx.config.get("maxRows", 100)), rng.randint(1, 4))
    rows = []
    for i in range(count):
        name = rng.choice(_NAMES)
        rows.append({"id": i + 1, "name": name, "email": f"{name.lower()}@example.com"})
    return {"table": table, "rows": rows, "rowCount": count}


def _llm_prompt(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    prompt = str(ctx.config.get("prompt", ""))
    n = count_items(ctx.input)
    prompt_tokens = max(1, len(prompt) // 4) + 12 * n
    completion = rng.randint(16, max(16, min(int(ctx.config.get("maxTokens", 256)), 200)))
    bits = rng.next64()
    text = (f"{n} record(s) reviewed: {_WORDS[bits % 8]} look {('steady', 'up', 'down')[(bits >> 8) % 3]}, "
            f"{_WORDS[(bits >> 16) % 8]} need attention.")
    return {"text": text, "model": ctx.config.get("model", "sim-gpt-small"),
            "usage": {"promptTokens": prompt_tokens, "completionTokens": completion,
                      "totalTokens": prompt_tokens + completion}}


def _send_email(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    return {"messageId": f"<{rng.next64():016x}@mail.flowstage.test>",
            "accepted": list(ctx.config.get("to", [])), "rejected": []}


def _transform(ctx: NodeContext) -> Any:
    return [{**item, "processed": True} if isinstance(item, dict) else {"value": item, "processed": True}
            for item in items_of(ctx.input)]


def _merge(ctx: NodeContext) -> Any:
    if ctx.config.get("mode") == "object":
        return dict(zip(ctx.input_sources, ctx.inputs, strict=True))
    merged: list[Any] = []
    for payload in ctx.inputs:
        merged.extend(items_of(payload))
    return merged


def _condition(ctx: NodeContext) -> Any:
    p = float(ctx.config.get("trueProbability", 0.5))
    branch = "true" if ctx.rng(STREAM_BRANCH).random() < p else "false"
    # "branch" names the output handle the payload leaves by; "data" is that payload.
    return {"branch": branch, "data": ctx.input}


def _delay(ctx: NodeContext) -> Any:
    return ctx.input


def _csv_parse(ctx: NodeContext) -> Any:
    source = ctx.input
    text = source.get("csv") or source.get("text") if isinstance(source, dict) else source
    delimiter = str(ctx.config.get("delimiter", ","))
    if isinstance(text, str):
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        table = [row for _, row in zip(range(101), reader, strict=False)]
        if ctx.config.get("hasHeader", True) and table:
            header, body = table[0], table[1:]
            rows: list[Any] = [dict(zip(header, r, strict=False)) for r in body]
        else:
            rows = table
    else:
        rng = ctx.rng()
        rows = [{"id": str(i + 1), "name": rng.choice(_NAMES), "amount": f"{rng.uniform(5, 500):.2f}"}
                for i in range(rng.randint(2, 4))]
    return {"rows": rows, "rowCount": len(rows)}


def _json_parse(ctx: NodeContext) -> Any:
    source = ctx.input
    text = source.get("json") or source.get("text") if isinstance(source, dict) else source
    if isinstance(text, str):
        # Raises msgspec.DecodeError for text that is not JSON: the node fails, as it should.
        return msgspec.json.decode(text)
    rng = ctx.rng()
    return {"id": rng.randint(1, 9999), "name": rng.choice(_NAMES),
            "tags": [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))], "active": rng.random() < 0.8}


def _files_of(value: Any) -> list[str]:
    if isinstance(value, dict):
        ids = value.get("fileIds")
        if isinstance(ids, list):
            return [str(i) for i in ids]
        files = value.get("files")
        if isinstance(files, list):
            return [str(f.get("fileId", f.get("id", i))) if isinstance(f, dict) else str(f)
                    for i, f in enumerate(files)]
    return ["sim-image-1"]


def _image(ctx: NodeContext) -> Any:
    rng = ctx.rng()
    cfg = ctx.config
    results = []
    for file_id in _files_of(ctx.input)[:20]:
        w, h = rng.randint(640, 4000), rng.randint(480, 3000)
        if ctx.type == "image_resize":
            scale = min(int(cfg.get("width", 800)) / w, int(cfg.get("height", 600)) / h, 1.0)
            results.append({"fileId": file_id, "width": max(1, round(w * scale)),
                            "height": max(1, round(h * scale)), "format": "JPEG"})
        elif ctx.type == "image_thumbnail":
            scale = min(int(cfg.get("size", 256)) / max(w, h), 1.0)
            results.append({"fileId": file_id, "width": max(1, round(w * scale)),
                            "height": max(1, round(h * scale)), "format": "JPEG"})
        else:
            results.append({"fileId": file_id, "format": cfg.get("format", "WEBP"),
                            "quality": cfg.get("quality", 85), "bytes": rng.randint(20_000, 900_000)})
    return {"files": results, "simulated": True}


def _output(ctx: NodeContext) -> Any:
    return {"name": ctx.config.get("name", "result"), "value": ctx.input}


GENERATORS: dict[str, Generator] = {
    "manual_trigger": _manual_trigger,
    "webhook_trigger": _webhook_trigger,
    "schedule_trigger": _schedule_trigger,
    "http_request": _http_request,
    "database_query": _database_query,
    "llm_prompt": _llm_prompt,
    "send_email": _send_email,
    "transform": _transform,
    "merge": _merge,
    "condition": _condition,
    "delay": _delay,
    "csv_parse": _csv_parse,
    "json_parse": _json_parse,
    "image_resize": _image,
    "image_thumbnail": _image,
    "image_convert": _image,
    "output": _output,
}

_FAILURES: dict[str, tuple[str, ...]] = {
    "http_request": ("HTTP 503 Service Unavailable", "HTTP 500 Internal Server Error",
                     "connection reset by peer", "request timed out"),
    "database_query": ("connection refused", "deadlock detected", "statement timeout"),
    "llm_prompt": ("rate limited (HTTP 429)", "context length exceeded", "upstream model overloaded"),
    "send_email": ("SMTP 421 service not available", "recipient mailbox unavailable"),
    "csv_parse": ("malformed row: unexpected quote",),
    "json_parse": ("invalid JSON: unexpected end of input",),
}
_DEFAULT_FAILURES = ("simulated failure", "worker crashed", "timed out")


def failure_message(node_type: str, rng: Rng) -> str:
    """A realistic reason for a simulated failure of this node type."""
    return rng.choice(_FAILURES.get(node_type, _DEFAULT_FAILURES))
