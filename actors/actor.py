"""The actor base: a bounded mailbox plus a behaviour, dispatched on the event loop.

An actor is not a Task. `tell` and `ask` put an envelope in its mailbox and, if it is not
already scheduled, schedule one drain with `loop.call_soon` (Akka's dispatcher model):
ten thousand idle actors cost ten thousand small objects, not ten thousand coroutines.
`receive` is synchronous, so messages are handled one at a time, in order.

Errors: a `FlowstageError` raised by `receive` is the reply to that message (the asker
gets it; the actor carries on). Any other exception is a crash: the asker gets it, then
`on_failure` runs and the supervisor decides whether the actor resumes or stops. On stop
the mailbox is drained and every pending `ask` fails with `ActorStopped`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Generic, Literal, Protocol, TypeVar

from flowstage.simulation.errors import Conflict, FlowstageError, MailboxFull

__all__ = ["Actor", "ActorStopped", "Directive", "Envelope", "Supervisor"]

log = logging.getLogger(__name__)

M = TypeVar("M")
Directive = Literal["resume", "stop"]


class ActorStopped(Conflict):
    """The actor was stopped before (or while) it could handle the message."""


class Envelope(Generic[M]):
    """A message and, for an ask, where its reply goes; the message itself stays a plain
    immutable command."""

    __slots__ = ("message", "reply")

    def __init__(self, message: M, reply: asyncio.Future[Any] | None) -> None:
        self.message = message
        self.reply = reply


class Supervisor(Protocol):
    def child_failed(self, child: Actor[Any], error: BaseException) -> Directive:
        """Decide what becomes of a child whose `receive` raised."""
        ...


class Actor(Generic[M]):
    """Subclass and implement `receive`; optionally the lifecycle hooks."""

    __slots__ = ("_loop", "_mailbox", "_mailbox_size", "_scheduled", "_status", "_supervisor")

    # Messages handled per drain before yielding the loop to others (fairness).
    throughput = 16

    def __init__(self, *, mailbox_size: int, supervisor: Supervisor | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        # Created on first message: most actors never get one, and an empty deque is ~600 B.
        self._mailbox: deque[Envelope[M]] | None = None
        self._mailbox_size = mailbox_size
        self._supervisor = supervisor
        self._scheduled = False
        self._status: Literal["new", "alive", "stopped"] = "new"

    # --- behaviour, to override ---------------------------------------------------------

    def receive(self, message: M) -> Any:
        raise NotImplementedError

    def on_start(self) -> None:
        """Runs once before the first message."""

    def on_stop(self) -> None:
        """Runs once when the actor stops, after its mailbox was drained."""

    def on_failure(self, error: BaseException) -> None:
        """Runs when `receive` crashed, before the supervisor decides."""

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._status == "alive"

    def start(self) -> None:
        if self._status != "new":
            return
        self._status = "alive"
        self.on_start()

    def stop(self) -> None:
        """Stop now: refuse new messages, fail pending asks, run `on_stop`. Idempotent."""
        if self._status == "stopped":
            return
        self._status = "stopped"
        mailbox, self._mailbox = self._mailbox, None
        while mailbox:
            envelope = mailbox.popleft()
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(f"{self!r} stopped before handling "
                                                          f"{type(envelope.message).__name__}"))
        try:
            self.on_stop()
        except Exception:
            log.exception("on_stop of %r failed", self)

    # --- messaging -------------------------------------------------------------------------

    def tell(self, message: M) -> None:
        """Send without waiting for a reply; raises MailboxFull or ActorStopped."""
        self._enqueue(Envelope(message, None))

    def deliver(self, message: M) -> Any:
        """Handle a message from the runtime itself now, in line, and return the reply: for
        messages that arise on the loop in an order already decided (a timer falling due, a
        handler finishing), where a mailbox hop would only add a turn of latency. The same
        failure boundary as the mailbox: a crash goes to the supervisor (and returns None)."""
        if self._status == "new":
            self.start()
        elif self._status == "stopped":
            return None
        try:
            return self.receive(message)
        except Exception as error:
            self._crashed(error)
            return None

    @property
    def pending(self) -> int:
        """Messages waiting in the mailbox."""
        return len(self._mailbox) if self._mailbox else 0

    def ask(self, message: M) -> asyncio.Future[Any]:
        """Send and get a future of the reply; raises MailboxFull or ActorStopped at once
        if the message cannot even be queued."""
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(Envelope(message, reply))
        return reply

    def _enqueue(self, envelope: Envelope[M]) -> None:
        if self._status == "stopped":
            raise ActorStopped(f"{self!r} is stopped")
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        elif len(mailbox) >= self._mailbox_size:
            raise MailboxFull(f"{self!r} has {len(mailbox)} messages waiting; try again later")
        mailbox.append(envelope)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._status == "new":
            self.start()
        for _ in range(self.throughput):
            mailbox = self._mailbox
            if not mailbox or self._status != "alive":
                return
            envelope = mailbox.popleft()
            reply = envelope.reply
            try:
                result = self.receive(envelope.message)
            except FlowstageError as error:
                if reply is not None and not reply.done():
                    reply.set_exception(error)
                elif reply is None:
                    log.info("%r refused %r: %s", self, envelope.message, error)
            except Exception as error:
                if reply is not None and not reply.done():
                    reply.set_exception(error)
                self._crashed(error)
            else:
                if reply is not None and not reply.done():
                    reply.set_result(result)
        if self._mailbox and not self._scheduled and self._status == "alive":
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _crashed(self, error: BaseException) -> None:
        try:
            self.on_failure(error)
        except Exception:
            log.exception("on_failure of %r failed", self)
        directive: Directive = "stop"
        if self._supervisor is not None:
            directive = self._supervisor.child_failed(self, error)
        else:
            log.error("unsupervised %r crashed", self, exc_info=error)
        if directive == "stop":
            self.stop()
