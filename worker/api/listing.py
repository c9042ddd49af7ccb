"""``GET /v1/calls`` (the paged list) and ``DELETE /v1/calls/{provider}/{call_id}`` (untrack).

The list is newest first and paged by keyset: ``cursor`` is the opaque token of the last
call of the previous page (its tracked time and row id), never an offset, so a call tracked
while a client pages never shifts or repeats what it reads, and page N costs what page 1 does.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from urllib.parse import parse_qs

import structlog
from starlette.requests import Request
from starlette.responses import Response

from worker.api.runtime import Context
from worker.api.web import HttpError, json_response, param
from worker.call_view import call_json
from worker.model import CallStatus, Terminal
from worker.store.base import CallCursor
from worker.track_input import TrackInputError, check_input

log = structlog.get_logger("worker.api")

STATES = (*(str(s) for s in CallStatus), *(str(t) for t in Terminal), "set_aside", "untracked")
DEFAULT_LIMIT = 50
MOST = 500
_PARAMS = ("provider", "state", "limit", "cursor")


def encode_cursor(cursor: CallCursor) -> str:
    """The opaque ``cursor`` text of a page's end (URL-safe, no padding)."""
    raw = json.dumps([cursor.tracked_at, cursor.pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> CallCursor:
    """The page end ``encode_cursor`` wrote; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        tracked_at, pk = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise ValueError("not a cursor from this API") from None
    if (not isinstance(tracked_at, int | float) or isinstance(tracked_at, bool)
            or not math.isfinite(tracked_at) or not isinstance(pk, int)
            or isinstance(pk, bool) or not 0 <= pk < 2**63):
        raise ValueError("not a cursor from this API")
    return CallCursor(tracked_at=float(tracked_at), pk=pk)


def query(request: Request) -> dict[str, str]:
    """The query's known parameters (each at most once); 400 for anything else."""
    raw = bytes(request.scope.get("query_string", b""))
    try:
        found = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the query string is not valid UTF-8") from None
    unknown = sorted(set(found) - set(_PARAMS))
    if unknown:
        raise HttpError(400, f"unknown parameter {unknown[0][:40]!r} "
                             f"(known: {', '.join(_PARAMS)})")
    twice = [name for name, values in found.items() if len(values) > 1]
    if twice:
        raise HttpError(400, f"{twice[0]!r} given more than once")
    return {name: values[0] for name, values in found.items()}


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MOST:
        raise HttpError(400, f"'limit' must be a whole number from 1 to {MOST}")
    return int(text)


async def list_calls(ctx: Context, request: Request) -> Response:
    """Tracked calls, newest first; ``next_cursor`` fetches the next page (null: the last)."""
    params = query(request)
    state, provider = params.get("state"), params.get("provider")
    if state is not None and state not in STATES:
        raise HttpError(400, f"'state' must be one of {', '.join(STATES)}")
    if provider is not None and provider not in ctx.runtime.config.providers:
        raise HttpError(400, f"unknown provider {provider[:40]!r} (configured: "
                             f"{', '.join(sorted(ctx.runtime.config.providers))})")
    after = None
    if (cursor := params.get("cursor")) is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError as exc:
            raise HttpError(400, f"'cursor': {exc}") from None
    page = await ctx.runtime.store.list_calls_page(limit=_limit(params.get("limit")),
                                                   provider=provider, state=state, after=after)
    return json_response(200, {"calls": [call_json(c) for c in page.calls],
                            "next_cursor": encode_cursor(page.next) if page.next else None})


async def untrack(ctx: Context, request: Request) -> Response:
    """Stop polling and archiving the call: 204 (again the second time), 404 if unknown."""
    provider, call_id = param(request, "provider"), param(request, "call_id")
    try:
        check_input(ctx.runtime.config, provider, call_id, None, None)
    except TrackInputError as exc:
        raise HttpError(400, str(exc)) from None
    if not await ctx.runtime.store.untrack(provider, call_id, ctx.clock()):
        raise HttpError(404, f"{provider[:40]!r} call {call_id[:80]!r} is not tracked")
    log.info("api.untracked", provider=provider, call_id=call_id)
    return Response(status_code=204)
