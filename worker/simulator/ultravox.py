"""Fake Ultravox: ``GET /api/calls/{id}``, ``GET /api/calls/{id}/recording``, ``GET /api/calls``.

As PROVIDERS.md describes: ``X-API-Key`` auth (401 without), camelCase call object with ISO
8601 timestamps, the call ends when ``ended`` is set, an unjoined call ends by itself with
``endReason = "unjoined"`` after its join timeout. ``/recording`` answers 404 until the
recording is ready (and forever when there is none or it failed: Ultravox has no failure
signal), then 302 to a signed GCS-style link, or 200 with the WAV bytes when the script says
``direct_recording``. Above ``rate_limit`` requests per second per key: 429 + Retry-After.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from worker.ratelimit import KeyedTokenBuckets
from worker.simulator.api import ProviderApp, Reply
from worker.simulator.asgi import Request, Router
from worker.simulator.faults import Faults
from worker.simulator.listing import Index, ultravox_list
from worker.simulator.signing import Signer
from worker.simulator.world import CallScript, Phase, RecordingPhase, World

NAME = "ultravox"
_NOT_FOUND = Reply(404, {"detail": "Not found."})


def iso(t: float) -> str:
    """Ultravox's timestamp style: microseconds and a ``Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def call_object(script: CallScript, now: float) -> dict[str, Any]:
    """The call as ``GET /api/calls/{id}`` shows it at ``now``."""
    phase = script.phase(now)
    joined = script.joined_at if phase is not Phase.PENDING else None
    ended = script.end_time if phase is Phase.ENDED else None
    reason = None
    summary = short = None
    if ended is not None:
        reason = "unjoined" if joined is None else script.end_reason
        if joined is not None:
            short = "A simulated call."
            summary = f"A simulated call that lasted {ended - joined:.1f} seconds."
    return {
        "callId": script.call_id,
        "created": iso(script.created_at),
        "joined": None if joined is None else iso(joined),
        "ended": None if ended is None else iso(ended),
        "endReason": reason,
        "recordingEnabled": script.recording_enabled,
        "maxDuration": "3600s",
        "joinTimeout": _duration(script.join_timeout),
        "metadata": dict(script.metadata),
        "shortSummary": short,
        "summary": summary,
    }


def _authorizer(api_key: str, rate_limit: float | None) -> Callable[[Request], Reply | None]:
    """401 without the key, then 429 + Retry-After past ``rate_limit`` requests/s per key."""
    bucket = KeyedTokenBuckets(rate_limit) if rate_limit else None

    def authorize(request: Request) -> Reply | None:
        key = request.header(b"x-api-key")
        if key is None:
            return Reply(401, {"detail": "Authentication credentials were not provided."})
        if key != api_key:
            return Reply(401, {"detail": "Invalid API key."})
        wait = bucket.take(key) if bucket is not None else 0.0
        if wait:
            seconds = max(1, math.ceil(wait))
            detail = f"Request was throttled. Expected available in {seconds} seconds."
            return Reply(429, {"detail": detail}, [(b"retry-after", str(seconds).encode())])
        return None

    return authorize


def ultravox_app(
    world: World,
    signer: Signer,
    *,
    api_key: str,
    rate_limit: float | None = 200.0,
    faults: Faults | None = None,
) -> ProviderApp:
    """The ASGI app; ``rate_limit`` None disables the 429s (benchmarks measure the daemon)."""

    def get_call(request: Request) -> Reply:
        script = world.get(NAME, request.params["call_id"])
        if script is None:
            return _NOT_FOUND
        return Reply(200, call_object(script, world.clock()))

    def get_recording(request: Request) -> Reply:
        script = world.get(NAME, request.params["call_id"])
        if script is None or not script.recordings:
            return _NOT_FOUND
        now = world.clock()
        recording = script.recordings[0]
        if script.recording_phase(recording, now) is not RecordingPhase.AVAILABLE:
            return _NOT_FOUND
        if script.direct_recording:
            return Reply(200, stream=recording, content_type=script.content_type(recording))
        link = signer.sign(NAME, script.call_id, recording, now)
        return Reply(302, raw=b"", headers=[(b"location", link.url.encode())])

    index = Index(world, NAME)
    router = Router()
    router.add("GET", "/api/calls", lambda request: ultravox_list(world, index, request,
                                                                  call_object))
    router.add("GET", "/api/calls/{call_id}", get_call)
    router.add("GET", "/api/calls/{call_id}/recording", get_recording)
    return ProviderApp(
        world=world,
        router=router,
        authorize=_authorizer(api_key, rate_limit),
        error=lambda status, message: {"detail": message},
        faults=faults,
    )
