"""Fake apifycloud video: ``GET /api/calls/{callId}`` wrapped in ``{"ok": true, "data": ...}``.

No auth (the reference shows none; ``X-App-Id`` / ``X-Widget-Key`` are accepted and ignored).
``data.status`` goes created -> active -> ended; participants carry ``joinedAt``/``leftAt``;
each recording appears (``processing``, ``url`` null) when the call goes live and becomes
``available`` with an S3 presigned URL (signed afresh on every GET) or ``failed``. Errors are
``{"ok": false, "error": ...}``. Timestamps are JavaScript style (milliseconds, ``Z``).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from worker.simulator.api import ProviderApp, Reply
from worker.simulator.asgi import Request, Router
from worker.simulator.faults import Faults
from worker.simulator.signing import Signer
from worker.simulator.world import CallScript, Phase, RecordingPhase, RecordingScript, World

NAME = "apifycloud"
_NOT_FOUND = Reply(404, {"ok": False, "error": "Call not found"})
_STATUS = {Phase.PENDING: "created", Phase.LIVE: "active", Phase.ENDED: "ended"}


def iso(t: float) -> str:
    """JavaScript's ``Date.toISOString()``: milliseconds and a ``Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _participants(script: CallScript, joined: float, ended: float | None) -> list[dict[str, Any]]:
    seeds = (f"participant:{n}:{script.call_id}".encode() for n in range(2))
    return [
        {
            "id": str(uuid.UUID(bytes=hashlib.blake2b(seed, digest_size=16).digest(), version=4)),
            "joinedAt": iso(joined),
            "leftAt": None if ended is None else iso(ended),
        }
        for seed in seeds
    ]


def call_object(script: CallScript, now: float, signer: Signer) -> dict[str, Any]:
    """The ``data`` of ``GET /api/calls/{id}`` at ``now``; available recordings get fresh URLs."""
    phase = script.phase(now)
    joined = script.joined_at if phase is not Phase.PENDING else None
    ended = script.end_time if phase is Phase.ENDED else None
    data: dict[str, Any] = {
        "id": script.call_id,
        "status": _STATUS[phase],
        "createdAt": iso(script.created_at),
        "participants": [],
        "recordings": [],
    }
    if joined is not None:
        data["participants"] = _participants(script, joined, ended)
        data["recordings"] = [
            _recording(script, rec, joined, now, signer) for rec in script.recordings
        ]
    return data


def _recording(
    script: CallScript, rec: RecordingScript, joined: float, now: float, signer: Signer
) -> dict[str, Any]:
    phase = script.recording_phase(rec, now) or RecordingPhase.PROCESSING
    ready = script.ready_at(rec)
    settled_at = ready if phase is not RecordingPhase.PROCESSING and ready is not None else joined
    url = None
    if phase is RecordingPhase.AVAILABLE:
        url = signer.sign(NAME, script.call_id, rec, now).url
    return {
        "id": rec.id,
        "providerArchiveId": rec.id.replace("-", "")[:24],
        "url": url,
        "status": phase.value,
        "createdAt": iso(joined),
        "updatedAt": iso(settled_at),
    }


def apifycloud_app(world: World, signer: Signer, *, faults: Faults | None = None) -> ProviderApp:
    """The ASGI app."""

    def get_call(request: Request) -> Reply:
        script = world.get(NAME, request.params["call_id"])
        if script is None:
            return _NOT_FOUND
        return Reply(200, {"ok": True, "data": call_object(script, world.clock(), signer)})

    router = Router()
    router.add("GET", "/api/calls/{call_id}", get_call)
    return ProviderApp(
        world=world,
        router=router,
        authorize=lambda request: None,
        error=lambda status, message: {"ok": False, "error": message},
        faults=faults,
    )
