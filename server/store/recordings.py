"""Imported recordings (simulation.recording): each stored whole, as checked, so that a replay
after a restart plays the same events."""

from __future__ import annotations

import msgspec

from flowstage.server.store.db import Database
from flowstage.simulation.errors import NotFound
from flowstage.simulation.messages import no_such
from flowstage.simulation.recording import Recording, RecordingInfo

__all__ = ["RecordingRepo"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Recording)


class RecordingRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, info: RecordingInfo, recording: Recording) -> None:
        row = (info.id, info.created_at, info.run_id, info.workflow_id, _encoder.encode(recording))
        await self._db.write(lambda conn: conn.execute(
            "INSERT INTO recordings (id, created_at, run_id, workflow_id, doc) VALUES (?, ?, ?, ?, ?)", row))

    async def get(self, recording_id: str) -> Recording:
        """The recording; NotFound if there is none with this id."""
        row = await self._db.read(lambda conn: conn.execute(
            "SELECT doc FROM recordings WHERE id = ?", (recording_id,)).fetchone())
        if row is None:
            raise NotFound(no_such("recording", recording_id))
        return _decoder.decode(row[0])
