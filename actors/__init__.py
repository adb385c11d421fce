"""The runtime: runs as actors, driven by one clock, persisted in batches.

It knows nothing of HTTP; the server calls the `Engine` and reads snapshots and event logs.
docs/architecture.md shows the parts and the path of one run through them.
"""

from flowstage.actors.actor import Actor, ActorStopped, Directive, Envelope, Supervisor
from flowstage.actors.clock import Clock, ManualClock, SystemClock, TimerHandle
from flowstage.actors.engine import Engine, EngineConfig, EventListener
from flowstage.actors.eventlog import EventLog, EventRow
from flowstage.actors.handlers import Handler, HandlerRegistry
from flowstage.actors.messages import GetSnapshot, Pause, Resume, RunCommand, Stop
from flowstage.actors.run import RunActor
from flowstage.actors.sink import MemorySink, RunSink

__all__ = [
    "Actor",
    "ActorStopped",
    "Clock",
    "Directive",
    "Engine",
    "EngineConfig",
    "Envelope",
    "EventListener",
    "EventLog",
    "EventRow",
    "GetSnapshot",
    "Handler",
    "HandlerRegistry",
    "ManualClock",
    "MemorySink",
    "Pause",
    "Resume",
    "RunActor",
    "RunCommand",
    "RunSink",
    "Stop",
    "Supervisor",
    "SystemClock",
    "TimerHandle",
]
