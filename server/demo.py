"""Seeding a new data directory with sample workflows (once: deleting them is respected)."""

from __future__ import annotations

from server.store import Store, new_id
from simulation.demo import demo_workflows
from simulation.graph import build_graph
from simulation.models import Workflow

__all__ = ["seed_demo_data"]


async def seed_demo_data(store: Store) -> int:
    """Create the sample workflows on the first start of an empty store; returns how many."""
    if await store.workflows.count() > 0 or not await store.claim_once("demo-seeded"):
        return 0
    now = store.workflows.now_iso()
    documents = demo_workflows()
    for doc in documents:
        nodes, connections = build_graph(doc.nodes, doc.connections)
        await store.workflows.create(Workflow(
            id=new_id("wf"), name=doc.name, description=doc.description, tags=doc.tags,
            version=1, created_at=now, updated_at=now, nodes=nodes, connections=connections,
        ))
    return len(documents)
