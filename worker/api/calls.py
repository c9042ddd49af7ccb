"""``POST /v1/calls`` and ``GET /v1/calls/{provider}/{call_id}``.

Tracking goes through ``worker.track_input``, the checks ``callwatch track`` uses, so a
call the API accepts is exactly a call the command would accept (and the other way round);
only the JSON shape checks are the API's own. Like ``track``, the POST is idempotent: the
second time it answers 200 and changes nothing.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import Response

from worker.api.runtime import Context
from worker.api.web import HttpError, json_response, param
from worker.call_view import call_json, downloads_json, with_live
from worker.events import rfc3339
from worker.model import TrackedCall
from worker.store.base import NewCall
from worker.track_input import TrackInputError, check_input, check_resolution, webhook_host

log = structlog.get_logger("worker.api")

BODY_LIMIT = 64 * 1024
FIELDS: dict[str, type[Any]] = {"provider": str, "call_id": str, "metadata": dict, "webhook": str}
REQUIRED = ("provider", "call_id")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity (not JSON, and nothing downstream could send them on)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not valid JSON: {exc.msg} at {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN, huge ints, deep nesting
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise HttpError(400, f"the body is not valid JSON: {reason[:120]}") from None


def track_request(body: Any) -> dict[str, Any]:
    """The body's fields, type-checked; ``null`` for an optional field means absent."""
    if not isinstance(body, dict):
        raise HttpError(400, 'the body must be a JSON object like {"provider": "ultravox", '
                             '"call_id": "..."}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise HttpError(400, f"unknown field {unknown[0][:40]!r} (known: {', '.join(FIELDS)})")
    for name in REQUIRED:
        if body.get(name) is None:
            raise HttpError(400, f"{name!r} is required")
    for name, kind in FIELDS.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise HttpError(400, f"{name!r} must be {_kind(kind())}, got {_kind(value)}")
    return body


def _kind(value: object) -> str:
    """A JSON type's name, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)


async def track(ctx: Context, request: Request) -> Response:
    """Track a call: 201 when new, 200 when it already was (nothing changes then)."""
    fields = track_request(parse_json(await request.body()))  # capped by BodyCap
    provider, call_id = fields["provider"], fields["call_id"]
    metadata = fields.get("metadata")
    config = ctx.runtime.config
    try:
        wanted = check_input(config, provider, call_id, metadata, fields.get("webhook"))
        if wanted.webhook is not None:
            check_resolution(config, wanted.webhook, await _resolve(wanted.webhook))
    except TrackInputError as exc:
        raise HttpError(400, str(exc)) from None
    meta, webhook = wanted.metadata, wanted.webhook
    created = await ctx.runtime.store.track(
        NewCall(provider=provider, call_id=call_id, metadata=meta, webhook_url=webhook),
        ctx.clock())
    if created:
        ctx.runtime.scheduler.wake(provider)  # poll it now, not at the next idle tick
        log.info("api.tracked", provider=provider, call_id=call_id)
    call = await ctx.runtime.store.get_call(provider, call_id)
    if call is None:  # tracked a moment ago: only a concurrent wipe of the database does this
        raise HttpError(503, "the call was tracked but cannot be read back; retry")
    return json_response(201 if created else 200, {"tracked": created, **call_json(call)})


async def _resolve(url: str) -> list[str]:
    """The addresses the webhook's host resolves to now (none if it does not, or not within
    5 s: the relay checks again at every attempt)."""
    host, port = webhook_host(url)
    with anyio.move_on_after(5):
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        return [str(info[4][0]) for info in found]
    return []


async def get(ctx: Context, request: Request) -> Response:
    """One call with its recordings and events, like ``callwatch status P ID --json``."""
    provider, call_id = param(request, "provider"), param(request, "call_id")
    call = await ctx.runtime.store.get_call(provider, call_id)
    if call is None:
        raise HttpError(404, f"{provider[:40]!r} call {call_id[:80]!r} is not tracked")
    events = await ctx.runtime.store.call_events(provider, call_id)
    data = call_json(call)
    data["downloads"] = await _downloads(ctx, call)
    data["events"] = [{"id": e.id, "type": e.type, "at": rfc3339(e.occurred_at)}
                      for e in events]
    return json_response(200, data)


async def _downloads(ctx: Context, call: TrackedCall) -> dict[str, Any]:
    """Recordings waiting to be archived, with the archiver's live progress when it runs
    in this process (the database has it only every few seconds)."""
    stored = await ctx.runtime.store.download_info(call.provider, call.call_id)
    archiver = ctx.runtime.archiver
    live = {} if archiver is None else {
        job.recording_id: progress for job, progress in archiver.downloads()
        if (job.provider, job.call_id) == (call.provider, call.call_id)}
    return downloads_json(call, with_live(stored, live))
