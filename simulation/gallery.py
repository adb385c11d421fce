"""The template gallery: ready-made graphs a new user can apply instead of starting from an
empty canvas.

Written as blueprints, like the demo workflows (`simulation.demo`), and laid out by the same
left-to-right auto-layout. Config values are fixed, not drawn from a seed: a gallery entry
reads the same on every server.
"""

from __future__ import annotations

from flowstage.simulation.demo import Blueprint, document
from flowstage.simulation.graph import DocumentIn

__all__ = ["GALLERY_TAG", "gallery_templates"]

GALLERY_TAG = "gallery"

_BLUEPRINTS: tuple[Blueprint, ...] = (
    (
        "Image pipeline: resize, WebP and thumbnail",
        "Takes every uploaded image, fits it into 1600x1200, converts it to WebP for the web "
        "and makes a 256 px thumbnail beside it.",
        ["images", "files"],
        [
            ("upload", "webhook_trigger", "Image uploaded",
             {"path": "/hooks/images", "method": "POST"}),
            ("resize", "image_resize", "Fit 1600x1200", {"width": 1600, "height": 1200}),
            ("webp", "image_convert", "Convert to WebP", {"format": "WEBP", "quality": 82}),
            ("thumb", "image_thumbnail", "256 px thumbnail", {"size": 256}),
            ("join", "merge", "Collect variants", {"mode": "object"}),
            ("done", "output", "Image variants", {"name": "variants"}),
        ],
        [("upload", "resize", None), ("resize", "webp", None), ("resize", "thumb", None),
         ("webp", "join", None), ("thumb", "join", None), ("join", "done", None)],
    ),
    (
        "Nightly ETL into the warehouse",
        "Every night, reads the previous day's orders, reshapes them into warehouse rows, "
        "loads them over the warehouse's HTTP API and mails the data team a summary.",
        ["etl", "database", "scheduled"],
        [
            ("cron", "schedule_trigger", "Nightly at 02:30",
             {"cron": "30 2 * * *", "timezone": "UTC"}),
            ("extract", "database_query", "Yesterday's orders",
             {"connection": "postgres://shop-db/orders",
              "query": "SELECT * FROM orders WHERE created_at >= current_date - 1 "
                       "AND created_at < current_date",
              "maxRows": 50000}),
            ("shape", "transform", "To warehouse rows",
             {"code": "return rows.map(r => ({order_id: r.id, total_cents: r.total, "
                      "day: r.created_at.slice(0, 10)}))",
              "language": "javascript"}),
            ("load", "http_request", "Load batch",
             {"url": "https://warehouse.example.com/v1/tables/orders/rows", "method": "POST",
              "timeoutMs": 60000}),
            ("report", "send_email", "Tell the data team",
             {"to": ["data-team@example.com"], "subject": "Nightly orders ETL finished"}),
        ],
        [("cron", "extract", None), ("extract", "shape", None), ("shape", "load", None),
         ("load", "report", None)],
    ),
    (
        "Summarise a document with an LLM",
        "Receives a document over a webhook, strips it to plain text, asks a language model for "
        "a five-bullet summary and returns it.",
        ["llm", "documents"],
        [
            ("doc", "webhook_trigger", "Document received",
             {"path": "/hooks/summarise", "method": "POST"}),
            ("text", "transform", "Plain text",
             {"code": "return [{text: input.body.text.trim()}]", "language": "javascript"}),
            ("summary", "llm_prompt", "Summarise",
             {"model": "sim-gpt-large",
              "prompt": "Summarise the following document in five bullet points for a busy reader.",
              "temperature": 0.2, "maxTokens": 400}),
            ("done", "output", "Summary", {"name": "summary"}),
        ],
        [("doc", "text", None), ("text", "summary", None), ("summary", "done", None)],
    ),
    (
        "Webhook → branch → notify",
        "Checks every incoming payment event: failed payments page the billing team by email, "
        "the others are posted to the accounting API; both paths end in one result.",
        ["webhook", "notifications", "branching"],
        [
            ("event", "webhook_trigger", "Payment event",
             {"path": "/hooks/payments", "method": "POST"}),
            ("failed", "condition", "Payment failed?",
             {"expression": "input.body.status == 'failed'", "trueProbability": 0.1}),
            ("mail", "send_email", "Alert billing",
             {"to": ["billing@example.com"], "subject": "Payment failed",
              "body": "A customer payment was declined."}),
            ("post", "http_request", "Record in accounting",
             {"url": "https://accounting.example.com/api/payments", "method": "POST"}),
            ("join", "merge", "Either path", {"mode": "append"}),
            ("done", "output", "Handled event", {"name": "payment"}),
        ],
        [("event", "failed", None), ("failed", "mail", "true"), ("failed", "post", "false"),
         ("mail", "join", None), ("post", "join", None), ("join", "done", None)],
    ),
    (
        "CSV import into the database",
        "Parses an uploaded CSV of contacts, normalises the e-mail addresses and upserts every "
        "row into the contacts table.",
        ["files", "database", "import"],
        [
            ("start", "manual_trigger", "Upload a CSV", {"payload": {}}),
            ("parse", "csv_parse", "Parse contacts", {"delimiter": ",", "hasHeader": True}),
            ("clean", "transform", "Normalise e-mails",
             {"code": "return rows.map(r => ({...r, email: r.email.toLowerCase()}))",
              "language": "javascript"}),
            ("upsert", "database_query", "Upsert contacts",
             {"connection": "postgres://crm-db/main",
              "query": "INSERT INTO contacts (email, name) VALUES (:email, :name) "
                       "ON CONFLICT (email) DO UPDATE SET name = excluded.name"}),
            ("done", "output", "Import report", {"name": "imported"}),
        ],
        [("start", "parse", None), ("parse", "clean", None), ("clean", "upsert", None),
         ("upsert", "done", None)],
    ),
    (
        "Weekly KPI report",
        "Every Monday morning, queries last week's sign-ups and revenue, has a language model "
        "write a short commentary and mails the report to the leadership list.",
        ["reporting", "llm", "scheduled"],
        [
            ("cron", "schedule_trigger", "Mondays at 08:00",
             {"cron": "0 8 * * 1", "timezone": "Europe/Berlin"}),
            ("signups", "database_query", "Sign-ups last week",
             {"query": "SELECT count(*) FROM users "
                       "WHERE created_at >= now() - interval '7 days'"}),
            ("revenue", "database_query", "Revenue last week",
             {"query": "SELECT sum(total) FROM invoices "
                       "WHERE paid_at >= now() - interval '7 days'"}),
            ("both", "merge", "Combine figures", {"mode": "object"}),
            ("comment", "llm_prompt", "Write commentary",
             {"prompt": "Write three sentences on these weekly figures, "
                        "compared with a typical week.",
              "temperature": 0.4}),
            ("mail", "send_email", "Mail leadership",
             {"to": ["leadership@example.com"], "subject": "Weekly KPIs"}),
        ],
        [("cron", "signups", None), ("cron", "revenue", None), ("signups", "both", None),
         ("revenue", "both", None), ("both", "comment", None), ("comment", "mail", None)],
    ),
    (
        "Poll an API and forward changes",
        "Every five minutes, fetches the status page of a supplier's API and, when the status "
        "changed, waits for it to settle and posts it to the team's chat webhook.",
        ["monitoring", "http", "scheduled"],
        [
            ("cron", "schedule_trigger", "Every 5 minutes",
             {"cron": "*/5 * * * *", "timezone": "UTC"}),
            ("fetch", "http_request", "Fetch status",
             {"url": "https://status.supplier.example.com/api/v2/status.json", "method": "GET",
              "timeoutMs": 5000}),
            ("changed", "condition", "Status changed?",
             {"expression": "output.body.status != state.last", "trueProbability": 0.2}),
            ("settle", "delay", "Wait 30 s", {"ms": 30000}),
            ("chat", "http_request", "Post to chat",
             {"url": "https://chat.example.com/hooks/ops", "method": "POST",
              "headers": {"Content-Type": "application/json"}}),
            ("quiet", "output", "No change", {"name": "unchanged"}),
        ],
        [("cron", "fetch", None), ("fetch", "changed", None), ("changed", "settle", "true"),
         ("changed", "quiet", "false"), ("settle", "chat", None)],
    ),
)


def gallery_templates() -> list[DocumentIn]:
    """The gallery, in the order an editor should show it."""
    return [document(b, (GALLERY_TAG,)) for b in _BLUEPRINTS]
