"""Recordings and replay: a finished run's recording as a download, importing one, and starting
a read-only replay of a run or of an imported recording. `RecordingService` does the work."""

from __future__ import annotations

import msgspec
from aiohttp import web

from flowstage.server.debugging import Speed
from flowstage.server.http import content_etag, decode_body, hashed_response, json_response
from flowstage.server.keys import ENGINE, NOW, STORE
from flowstage.server.openapi import Route
from flowstage.server.recordings import RecordingService
from flowstage.server.routes.workflows import IF_NONE_MATCH
from flowstage.simulation.models import Run
from flowstage.simulation.recording import FormatVersion, Recording, RecordingInfo, check_version

__all__ = ["ROUTES", "ReplayRequest"]

_encoder = msgspec.json.Encoder()


class ReplayRequest(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`POST .../replay` body; optional. `speed` divides the recorded offsets (2 = twice as fast);
    the server's default speed when absent."""

    speed: Speed | None = None


def _service(request: web.Request) -> RecordingService:
    app = request.app
    return RecordingService(app[ENGINE], app[STORE], app[NOW])


def _replay_response(run: Run) -> web.Response:
    body = _encoder.encode(run)
    return web.Response(body=body, status=202, content_type="application/json",
                        headers={"Location": f"/api/runs/{run.id}", "ETag": content_etag(body)})


async def get_recording(request: web.Request) -> web.Response:
    run_id = request.match_info["runId"]
    recording = await _service(request).export(run_id)
    disposition = f'attachment; filename="{run_id}.flowstage-recording.json"'
    return hashed_response(request, recording, {"Content-Disposition": disposition})


async def import_recording(request: web.Request) -> web.Response:
    # The version first: a newer format may differ anywhere else.
    check_version(await decode_body(request, FormatVersion))
    info = await _service(request).add(await decode_body(request, Recording))
    return json_response(info, 201)


async def replay_run(request: web.Request) -> web.Response:
    body = await decode_body(request, ReplayRequest, optional=True)
    return _replay_response(await _service(request).replay_run(request.match_info["runId"], body.speed))


async def replay_recording(request: web.Request) -> web.Response:
    body = await decode_body(request, ReplayRequest, optional=True)
    return _replay_response(await _service(request).replay_recording(request.match_info["id"], body.speed))


_REPLAY_HEADERS = {"Location": "The replay run's URL", "ETag": "The run's current tag"}

ROUTES = (
    Route("GET", "/api/runs/{runId}/recording", get_recording,
          "A finished run's recording: the run, the graph it executed and every event at its simulated "
          "offset, as a JSON attachment", "recordings", operation_id="getRunRecording",
          response=Recording, headers=IF_NONE_MATCH, errors=(304, 404, 409),
          response_headers={"Content-Disposition": 'attachment; filename="<runId>.flowstage-recording.json"',
                            "ETag": "The recording's tag"}),
    Route("POST", "/api/recordings", import_recording,
          "Import a recording (checked: 422 at its first bad field) to replay it later", "recordings",
          operation_id="importRecording", creates="/api/recordings/{id}", body=Recording,
          response=RecordingInfo, status=201, errors=(400, 413, 415, 422)),
    Route("POST", "/api/runs/{runId}/replay", replay_run,
          "Start a read-only replay of a finished run: its recorded events, re-timed by speed", "recordings",
          operation_id="replayRun", creates="/api/runs/{runId}", body=ReplayRequest, body_required=False,
          response=Run, status=202, errors=(400, 404, 409, 413, 415, 422, 503), response_headers=_REPLAY_HEADERS),
    Route("POST", "/api/recordings/{id}/replay", replay_recording,
          "Start a read-only replay of an imported recording", "recordings",
          operation_id="replayRecording", creates="/api/runs/{runId}", body=ReplayRequest, body_required=False,
          response=Run, status=202, errors=(400, 404, 413, 415, 422, 503), response_headers=_REPLAY_HEADERS),
)
