"""A seeded mock-data factory for sample workflows, so a new user sees something at once.

Blueprints name the shape of each sample; the factory fills in realistic config values
(hosts, tables, addresses, prompts) from a seeded RNG and lays nodes out left to right by
depth, as an editor's auto-layout would. The same seed always gives the same samples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from flowstage.simulation.graph import ConnectionIn, DocumentIn, NodeIn
from flowstage.simulation.models import NodeData, Position

__all__ = ["Blueprint", "demo_workflows", "document", "layout"]

# (node id, type, label, config), then (source, target, sourceHandle) triples.
BlueprintNode = tuple[str, str, str, dict[str, Any]]
BlueprintEdge = tuple[str, str, str | None]
Blueprint = tuple[str, str, list[str], list[BlueprintNode], list[BlueprintEdge]]

_COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
_TABLES = ("orders", "customers", "invoices", "events", "subscriptions", "tickets")
_TEAMS = ("ops", "sales", "support", "finance", "data")


def layout(node_ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, Position]:
    """Place each node in the column of its longest path from a root, rows in order."""
    depth = dict.fromkeys(node_ids, 0)
    for _ in node_ids:  # longest-path relaxation; graphs here are small DAGs
        for source, target in edges:
            depth[target] = max(depth[target], depth[source] + 1)
    rows: dict[int, int] = {}
    positions: dict[str, Position] = {}
    for n in node_ids:
        row = rows.get(depth[n], 0)
        rows[depth[n]] = row + 1
        positions[n] = Position(x=80.0 + 260.0 * depth[n], y=80.0 + 140.0 * row)
    return positions


def _blueprints(rng: random.Random) -> list[Blueprint]:
    company = rng.choice(_COMPANIES)
    team = rng.choice(_TEAMS)
    table = rng.choice(_TABLES)
    api = f"https://api.{company}.example.com"
    return [
        (
            "Product image pipeline",
            "Resizes uploaded product photos, converts them to WebP and makes thumbnails.",
            ["images", "files"],
            [
                ("upload", "webhook_trigger", "Photo uploaded", {"path": "/hooks/photos", "method": "POST"}),
                ("resize", "image_resize", "Resize to 1200×900", {"width": 1200, "height": 900}),
                ("webp", "image_convert", "Convert to WebP", {"format": "WEBP", "quality": rng.choice((75, 80, 85))}),
                ("thumb", "image_thumbnail", "Thumbnail", {"size": 256}),
                ("done", "output", "Store result", {"name": "images"}),
            ],
            [("upload", "resize", None), ("resize", "webp", None), ("resize", "thumb", None),
             ("webp", "done", None), ("thumb", "done", None)],
        ),
        (
            f"Nightly {table} ETL",
            f"Extracts yesterday's {table}, reshapes them and loads them into the warehouse.",
            ["etl", "database", "scheduled"],
            [
                ("cron", "schedule_trigger", "Every night at 02:00", {"cron": "0 2 * * *", "timezone": "UTC"}),
                ("extract", "database_query", f"Read {table}",
                 {"query": f"SELECT * FROM {table} WHERE created_at >= now() - interval '1 day'",
                  "maxRows": rng.choice((500, 1000, 5000))}),
                ("shape", "transform", "Reshape rows",
                 {"code": "return rows.map(r => ({...r, loaded_at: now()}))", "language": "javascript"}),
                ("load", "http_request", "Load into warehouse",
                 {"url": f"{api}/warehouse/{table}", "method": "POST"}),
                ("report", "send_email", f"Notify {team}",
                 {"to": [f"{team}@{company}.example.com"], "subject": f"{table} ETL finished"}),
            ],
            [("cron", "extract", None), ("extract", "shape", None), ("shape", "load", None),
             ("load", "report", None)],
        ),
        (
            "Support ticket triage",
            "Classifies incoming tickets with an LLM and routes urgent ones to the on-call team.",
            ["llm", "support"],
            [
                ("ticket", "webhook_trigger", "New ticket", {"path": "/hooks/tickets", "method": "POST"}),
                ("classify", "llm_prompt", "Classify urgency",
                 {"model": "sim-gpt-large", "prompt": "Is this ticket urgent? Answer yes or no.", "temperature": 0.0}),
                ("urgent", "condition", "Urgent?", {"expression": "output.text == 'yes'", "trueProbability": 0.3}),
                ("page", "send_email", "Page on-call",
                 {"to": [f"oncall@{company}.example.com"], "subject": "Urgent ticket"}),
                ("queue", "http_request", "Add to backlog", {"url": f"{api}/tickets/backlog", "method": "POST"}),
                ("merge", "merge", "Join", {"mode": "object"}),
                ("done", "output", "Triage result", {"name": "triage"}),
            ],
            [("ticket", "classify", None), ("classify", "urgent", None), ("urgent", "page", "true"),
             ("urgent", "queue", "false"), ("page", "merge", None), ("queue", "merge", None),
             ("merge", "done", None)],
        ),
        (
            "Lead enrichment",
            "Looks a new lead up in two services at once and saves the merged profile.",
            ["sales", "crm"],
            [
                ("start", "manual_trigger", "Run for a lead",
                 {"payload": {"email": f"jane@{rng.choice(_COMPANIES)}.example.com"}}),
                ("clearbit", "http_request", "Company lookup", {"url": f"{api}/companies/lookup", "method": "GET"}),
                ("social", "http_request", "Social profiles", {"url": f"{api}/people/social", "method": "GET"}),
                ("merge", "merge", "Merge profiles", {"mode": "object"}),
                ("save", "database_query", "Upsert lead",
                 {"query": "INSERT INTO leads VALUES (:profile) ON CONFLICT DO UPDATE"}),
            ],
            [("start", "clearbit", None), ("start", "social", None), ("clearbit", "merge", None),
             ("social", "merge", None), ("merge", "save", None)],
        ),
        (
            "CSV import with summary",
            "Parses an uploaded CSV, summarises it with an LLM and mails the summary.",
            ["files", "llm"],
            [
                ("start", "manual_trigger", "Run", {"payload": {}}),
                ("parse", "csv_parse", "Parse CSV", {"delimiter": ",", "hasHeader": True}),
                ("wait", "delay", "Wait for quota", {"ms": rng.choice((500, 1000, 2000))}),
                ("summarise", "llm_prompt", "Summarise",
                 {"prompt": "Summarise these rows in three bullet points.", "maxTokens": 300}),
                ("mail", "send_email", "Send summary",
                 {"to": [f"{team}@{company}.example.com"], "subject": "CSV summary"}),
            ],
            [("start", "parse", None), ("parse", "wait", None), ("wait", "summarise", None),
             ("summarise", "mail", None)],
        ),
    ]


def document(blueprint: Blueprint, extra_tags: Sequence[str] = ()) -> DocumentIn:
    """A blueprint as a graph an editor can load, laid out left to right."""
    name, description, tags, nodes, edges = blueprint
    positions = layout([n[0] for n in nodes], [(s, t) for s, t, _ in edges])
    return DocumentIn(
        name=name,
        description=description,
        tags=[*extra_tags, *tags],
        nodes=[
            NodeIn(id=node_id, type=type_, position=positions[node_id],
                   data=NodeData(label=label, config=config))
            for node_id, type_, label, config in nodes
        ],
        connections=[
            ConnectionIn(id=f"{s}-{t}", source=s, target=t, source_handle=h)
            for s, t, h in edges
        ],
    )


def demo_workflows(seed: int = 7) -> list[DocumentIn]:
    return [document(b) for b in _blueprints(random.Random(seed))]
