"""Fake Envoy (tryenvoy.ai): ``GET /api/v1/calls/{id}``, its ``/recording`` JSON, the list.

Bearer auth (401 without). Status goes SCHEDULED -> IN_PROGRESS -> the script's final status
(COMPLETED by default, NO_ANSWER for a call nobody joined). ``recording_status`` is null while
there is nothing to say (before the end, while processing), then ``AVAILABLE`` or ``FAILED``.
``/recording`` answers 404 until the recording is available, then JSON (not a redirect) with a
CloudFront-style ``Expires=`` link and its ``expires_at``. Errors are FastAPI-style
``{"detail": ...}``: Envoy's 422s suggest FastAPI, and the reference shows no error body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.simulator.api import ProviderApp, Reply
from worker.simulator.asgi import Request, Router
from worker.simulator.faults import Faults
from worker.simulator.listing import Index, envoy_list
from worker.simulator.signing import Signer
from worker.simulator.world import CallScript, Phase, RecordingPhase, World

NAME = "envoy"
ORGANIZATION_ID = "org_callwatchsimulator"
_NOT_FOUND = Reply(404, {"detail": "Call not found"})
_NO_RECORDING = Reply(404, {"detail": "Recording not found"})
_RECORDING_STATUS = {RecordingPhase.AVAILABLE: "AVAILABLE", RecordingPhase.FAILED: "FAILED"}


def iso(t: float) -> str:
    """Envoy's timestamp style: Python's isoformat with a ``+00:00`` offset."""
    return datetime.fromtimestamp(t, UTC).isoformat()


def _status(script: CallScript, phase: Phase) -> str:
    if phase is Phase.PENDING:
        return "SCHEDULED"
    if phase is Phase.LIVE:
        return "IN_PROGRESS"
    if script.final_status is not None:
        return script.final_status
    return "NO_ANSWER" if script.unjoined else "COMPLETED"


def call_object(script: CallScript, now: float) -> dict[str, Any]:
    """The call as ``GET /api/v1/calls/{id}`` shows it at ``now``."""
    phase = script.phase(now)
    joined = script.joined_at if phase is not Phase.PENDING else None
    ended = script.end_time if phase is Phase.ENDED else None
    rec_phase = script.recording_phase(script.recordings[0], now) if script.recordings else None
    number = script.stable_int("load")
    inbound = number % 4 == 0
    ours, theirs = f"+1415555{number % 10000:04d}", f"+1312555{(number >> 16) % 10000:04d}"
    return {
        "id": script.call_id,
        "status": _status(script, phase),
        "call_direction": "INBOUND" if inbound else "OUTBOUND",
        "call_start_time": None if joined is None else iso(joined),
        "call_end_time": None if ended is None else iso(ended),
        "recording_status": _RECORDING_STATUS.get(rec_phase) if rec_phase else None,
        "load_id": f"load_{number:016x}",
        "load_number": f"LD-{number % 1000000:06d}",
        "organization_id": ORGANIZATION_ID,
        "from_phone_number": theirs if inbound else ours,
        "to_phone_number": ours if inbound else theirs,
    }


def list_item(script: CallScript, now: float) -> dict[str, Any]:
    """A call as the list shows it: the call object plus ``created_at`` (the list's order)."""
    return {**call_object(script, now), "created_at": iso(script.created_at)}


def recording_object(script: CallScript, now: float, signer: Signer) -> dict[str, Any] | None:
    """``GET /api/v1/calls/{id}/recording`` at ``now`` with a fresh link; None while none."""
    if not script.recordings:
        return None
    recording = script.recordings[0]
    joined, ended = script.joined_at, script.end_time
    phase = script.recording_phase(recording, now)
    if phase is not RecordingPhase.AVAILABLE or joined is None or ended is None:
        return None
    link = signer.sign(NAME, script.call_id, recording, now)
    return {
        "call_id": script.call_id,
        "url": link.url,
        "content_type": script.content_type(recording),
        "expires_at": iso(link.expires_at),
        "recording_status": "AVAILABLE",
        "duration_seconds": round(ended - joined, 3),
        "file_size_bytes": recording.size,
        "recording_start_time": iso(joined),
    }


def envoy_app(
    world: World, signer: Signer, *, api_key: str, faults: Faults | None = None
) -> ProviderApp:
    """The ASGI app; ``api_key`` is the one Bearer token accepted."""
    expected = f"Bearer {api_key}"

    def authorize(request: Request) -> Reply | None:
        given = request.header(b"authorization")
        if given is None:
            return Reply(401, {"detail": "Not authenticated"})
        if given != expected:
            return Reply(401, {"detail": "Invalid authentication credentials"})
        return None

    def get_call(request: Request) -> Reply:
        script = world.get(NAME, request.params["call_id"])
        if script is None:
            return _NOT_FOUND
        return Reply(200, call_object(script, world.clock()))

    def get_recording(request: Request) -> Reply:
        script = world.get(NAME, request.params["call_id"])
        if script is None:
            return _NOT_FOUND
        found = recording_object(script, world.clock(), signer)
        return _NO_RECORDING if found is None else Reply(200, found)

    index = Index(world, NAME)
    router = Router()
    router.add("GET", "/api/v1/calls", lambda request: envoy_list(world, index, request,
                                                                 list_item))
    router.add("GET", "/api/v1/calls/{call_id}", get_call)
    router.add("GET", "/api/v1/calls/{call_id}/recording", get_recording)
    return ProviderApp(
        world=world,
        router=router,
        authorize=authorize,
        error=lambda status, message: {"detail": message},
        faults=faults,
    )
