"""The runtime: actor base, clock, run and node actors, event logs, the engine and its sink.

It knows nothing of HTTP; the server calls the engine and reads snapshots and event logs.
"""

from flowstage.actors.actor import Actor, ActorStopped, Directive, Envelope, Supervisor
from flowstage.actors.clock import Clock, ManualClock, SystemClock, TimerHandle
from flowstage.actors.engine import Engine, EngineConfig, EventListener
from flowstage.actors.eventlog import EventLog, EventRow
from flowstage.actors.handlers import Handler, HandlerRegistry
from flowstage.actors.run import GetSnapshot, Pause, Resume, RunActor, RunCommand, Stop
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
