"""Seeding a new data directory with sample workflows and the template gallery (each once:
deleting them is respected)."""

from __future__ import annotations

import logging

from flowstage.server.store import Store, new_id
from flowstage.simulation.demo import demo_workflows
from flowstage.simulation.gallery import gallery_templates
from flowstage.simulation.graph import document_graph
from flowstage.simulation.models import Workflow
from flowstage.simulation.templates import draft_from_document, new_template

__all__ = ["seed_demo_data"]

log = logging.getLogger("flowstage")


async def seed_demo_data(store: Store) -> int:
    """Create the sample workflows on the first start of an empty store, and the template
    gallery on the first start with no templates; returns how many workflows were created."""
    templates = await _seed_gallery(store)
    if templates:
        log.info("seeded %d gallery templates", templates)
    return await _seed_workflows(store)


async def _seed_workflows(store: Store) -> int:
    if await store.workflows.count() > 0 or not await store.claim_once("demo-seeded"):
        return 0
    now = store.workflows.now_iso()
    documents = demo_workflows()
    for doc in documents:
        nodes, connections = document_graph(doc)
        await store.workflows.create(Workflow(
            id=new_id("wf"), name=doc.name, description=doc.description, tags=doc.tags,
            version=1, created_at=now, updated_at=now, nodes=nodes, connections=connections,
        ))
    return len(documents)


async def _seed_gallery(store: Store) -> int:
    if await store.templates.count() > 0 or not await store.claim_once("gallery-seeded"):
        return 0
    now = store.templates.now_iso()
    documents = gallery_templates()
    # Lists are newest first: create the last entry first so the gallery lists in its order.
    for doc in reversed(documents):
        await store.templates.create(new_template(draft_from_document(doc), new_id("tpl"), now))
    return len(documents)
