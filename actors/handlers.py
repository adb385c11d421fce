"""Who does a node's work: a registry from node type to handler.

By default every type is served by its mock generator from `simulation.outputs`, called
when the node's simulated time is up. The server can replace a type's handler, e.g. the
image nodes with real Pillow processing:

    async def resize(ctx: NodeContext) -> Any: ...   # runs as a task owned by the engine
    engine.handlers.register("image_resize", resize)

A synchronous handler runs on the loop when the node's time is up, so it must be quick.
An `async def` handler starts when the node starts and runs alongside its simulated
duration; the node completes when both are over (the later of the two). Either kind
raising fails that node only. Handlers must not mutate their inputs: one payload may be
delivered to several nodes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flowstage.simulation.outputs import GENERATORS, NodeContext

__all__ = ["Handler", "HandlerRegistry"]

Handler = Callable[[NodeContext], Any]


class HandlerRegistry:
    __slots__ = ("_entries",)

    def __init__(self, handlers: Mapping[str, Handler] = GENERATORS) -> None:
        self._entries: dict[str, tuple[Handler, bool]] = {}
        for node_type, handler in handlers.items():
            self.register(node_type, handler)

    def register(self, node_type: str, handler: Handler) -> None:
        """Serve `node_type` with `handler` from the next run on (running ones keep theirs
        only if they already started the node)."""
        self._entries[node_type] = (handler, inspect.iscoroutinefunction(handler))

    def get(self, node_type: str) -> tuple[Handler, bool] | None:
        """(handler, is_async), or None for a type nobody serves (it passes its input on)."""
        return self._entries.get(node_type)

    def __contains__(self, node_type: object) -> bool:
        return node_type in self._entries
