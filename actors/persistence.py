"""What every run actor (actors.run, actors.replay) keeps for the flusher: which of its events
and whether a snapshot are yet to be persisted, and telling the flusher once.

A `PersistentRun` is a `Flushable` (actors.runtime): the flusher `collect`s its new events and,
when `_needs_save`, the snapshot `_to_save` gives; then says `persisted` or `unpersisted`.
"""

from __future__ import annotations

from flowstage.actors.actor import Actor, Supervisor
from flowstage.actors.eventlog import EventLog, EventRows
from flowstage.actors.messages import RunMessage
from flowstage.actors.runtime import Runtime
from flowstage.simulation.models import Run

__all__ = ["PersistentRun"]


class PersistentRun(Actor[RunMessage]):
    __slots__ = ("_collected", "_dirty", "_needs_save", "_persisted", "_runtime", "_saving", "id", "log")

    def __init__(self, runtime: Runtime, supervisor: Supervisor, run_id: str, log: EventLog) -> None:
        super().__init__(mailbox_size=runtime.config.mailbox_size, supervisor=supervisor, loop=runtime.loop)
        self._runtime = runtime
        self.id = run_id
        self.log = log
        # What the flusher has yet to do: events after `_persisted`, and a snapshot when
        # `_needs_save`. `_dirty`: the flusher already has this run on its list.
        self._dirty = False
        self._needs_save = True
        self._saving = False
        self._persisted = 0
        self._collected = 0

    @property
    def stored(self) -> bool:
        """Everything about the run is persisted (it may leave memory)."""
        return not self._dirty and not self._needs_save and self._persisted >= self.log.seq

    def _tell_flusher(self) -> None:
        """After a message: put the run on the flusher's list once, if anything is new."""
        if not self._dirty and (self._needs_save or self.log.seq > self._persisted):
            self._dirty = True
            self._runtime.on_dirty(self)

    def _to_save(self) -> Run:
        """The snapshot a flush stores."""
        raise NotImplementedError

    # --- the flusher's side (a `Flushable`) ------------------------------------------------

    def collect(self, rows: EventRows) -> Run | None:
        self._dirty = False
        upto = self.log.seq
        if upto > self._persisted:
            self.log.add_rows(rows, self._persisted, upto)
        self._collected = upto
        self._saving = self._needs_save
        if not self._needs_save:
            return None
        self._needs_save = False
        return self._to_save()

    def persisted(self) -> None:
        if self._collected > self._persisted:
            self._persisted = self._collected
        self._saving = False

    def unpersisted(self) -> None:
        self._needs_save |= self._saving
        self._saving = False
        if not self._dirty:
            self._dirty = True
            self._runtime.on_dirty(self)
