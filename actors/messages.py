"""Every message a run or a node actor receives: typed, immutable, dispatched by `match`.

A run hears from two directions. Clients (through the engine, over HTTP) send the
commands `Pause`, `Resume`, `Stop` and `GetSnapshot` into its bounded mailbox with `ask`.
The runtime itself delivers `Start`, `Due` (its node timers fell due), `WorkDone` (an
async handler finished) and `Interrupt` in line, through the same `receive`: those arise
on the event loop in the order the scheduler decides, so a mailbox hop would only add a
turn of latency (see `Actor.deliver`).

A node hears only from its run, in line: `Start`, `Tick`, `Freeze`, `Thaw`, `Skip`,
`Halt` and `WorkDone`; and, when the run is being debugged, `Queue` (held at a breakpoint)
and `Reuse` (completed with an output it did not compute). Debugging's commands to a run
are `Step` and `SetBreakpoints`.
"""

from __future__ import annotations

import msgspec

from flowstage.simulation.models import ErrorInfo

__all__ = [
    "FREEZE",
    "GET_SNAPSHOT",
    "QUEUE",
    "START",
    "THAW",
    "TICK",
    "Due",
    "Freeze",
    "GetSnapshot",
    "Halt",
    "Interrupt",
    "NodeMessage",
    "Pause",
    "Queue",
    "Resume",
    "Reuse",
    "RunCommand",
    "RunMessage",
    "SetBreakpoints",
    "Skip",
    "Start",
    "Step",
    "Stop",
    "Thaw",
    "Tick",
    "WorkDone",
]


class Start(msgspec.Struct, frozen=True, tag="start"):
    """Begin: a run announces itself and starts its roots; a node queues and starts."""


class Due(msgspec.Struct, frozen=True, tag="due"):
    """The run's node timers due by `limit` (clock seconds) fell due; the reply is how many
    it handled (the scheduler's budget per turn of the loop)."""

    limit: float


class WorkDone(msgspec.Struct, frozen=True, tag="work-done"):
    """Node `node` (its index in the plan) has an async handler that finished."""

    node: int


class Pause(msgspec.Struct, frozen=True, tag="pause"):
    pass


class Resume(msgspec.Struct, frozen=True, tag="resume"):
    pass


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    pass


class GetSnapshot(msgspec.Struct, frozen=True, tag="snapshot"):
    pass


class Step(msgspec.Struct, frozen=True, tag="step"):
    """A paused run runs on until the next node starts or finishes, or, with `node_id`, until
    that node finishes; then it pauses again."""

    node_id: str | None = None


class SetBreakpoints(msgspec.Struct, frozen=True, tag="set-breakpoints"):
    """The nodes the run pauses before, from now on."""

    node_ids: tuple[str, ...]


class Interrupt(msgspec.Struct, frozen=True, tag="interrupt"):
    """End an active run `failed` with `error`: the engine is shutting down, or the run's
    own machinery broke."""

    error: ErrorInfo


class Tick(msgspec.Struct, frozen=True, tag="tick"):
    """The node's next timer fell due: a progress step, its failure point or its end."""


class Freeze(msgspec.Struct, frozen=True, tag="freeze"):
    """The run paused: keep the progress reached."""


class Thaw(msgspec.Struct, frozen=True, tag="thaw"):
    """The run resumed: continue from the progress kept."""


class Skip(msgspec.Struct, frozen=True, tag="skip"):
    """An incoming connection went dead (for `reason`): this idle node will not run."""

    reason: str


class Queue(msgspec.Struct, frozen=True, tag="queue"):
    """All its inputs are in, but the run holds it (a breakpoint, or a pause): queue, not start."""


class Reuse(msgspec.Struct, frozen=True, tag="reuse"):
    """Complete at once with `output` (encoded JSON) instead of running: taken from an
    earlier run, or `pinned` by the execute."""

    output: bytes
    pinned: bool


class Halt(msgspec.Struct, frozen=True, tag="halt"):
    """The run stopped (or was interrupted): settle as stopped or skipped, for `reason`."""

    reason: str


RunCommand = Pause | Resume | Stop | GetSnapshot | Step | SetBreakpoints
"""What clients may ask of a run (through its mailbox)."""

RunMessage = Start | Due | WorkDone | Pause | Resume | Stop | GetSnapshot | Step | SetBreakpoints | Interrupt
NodeMessage = Start | Tick | Freeze | Thaw | Skip | Halt | WorkDone | Queue | Reuse

START = Start()
QUEUE = Queue()
TICK = Tick()
FREEZE = Freeze()
THAW = Thaw()
GET_SNAPSHOT = GetSnapshot()
