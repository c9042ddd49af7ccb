"""Ultravox's own webhooks: verified, then the call they name is polled at once.

PROVIDERS.md: ``X-Ultravox-Webhook-Timestamp`` is ISO 8601; ``X-Ultravox-Webhook-Signature`` is
hex HMAC-SHA256(secret, raw body bytes + timestamp bytes), several comma-separated during a key
rotation; a timestamp older than about a minute is a replay. The webhook carries no state we
trust: it only makes the call due, and the next poll (right away) reads the truth from the API.
So a replay inside the window costs one extra poll, nothing more.

Answers: 401 when verification fails, 400 for a verified body we cannot read, 200 when the call
will be polled now, 202 when the event needs nothing (untracked or finished call, other event
types). Ultravox retries on anything but 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import structlog
from starlette.requests import Request
from starlette.responses import Response

from worker.api.runtime import Context
from worker.api.web import HttpError, error_response, json_response

log = structlog.get_logger("worker.api")

PROVIDER = "ultravox"
MAX_SKEW = 60.0  # seconds a timestamp may lie in the past, or in the future (clock drift)
BODY_LIMIT = 1024 * 1024  # the call object carries summaries and metadata: be generous
MAX_SIGNATURES = 16  # a rotation lists two or three; more is not a rotation
POLL_EVENTS = frozenset({"call.started", "call.joined", "call.ended"})
TIMESTAMP_HEADER = "x-ultravox-webhook-timestamp"
SIGNATURE_HEADER = "x-ultravox-webhook-signature"
_CHALLENGE = {"www-authenticate": 'Ultravox-Webhook-Signature realm="callwatch"'}


class VerificationError(Exception):
    """The request is not provably from Ultravox, or not recent."""


def signature(secret: bytes, body: bytes, timestamp: bytes) -> str:
    """What Ultravox puts in the signature header for this body and timestamp."""
    return hmac.new(secret, body + timestamp, hashlib.sha256).hexdigest()


def parse_timestamp(raw: bytes) -> float:
    """ISO 8601 -> POSIX seconds; a time without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw.decode("ascii").strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (UnicodeDecodeError, ValueError, OverflowError):  # not ISO, or out of range
        raise VerificationError("X-Ultravox-Webhook-Timestamp is not an ISO 8601 time") from None


def verify(secret: bytes, body: bytes, *, timestamp: bytes | None, signatures: bytes | None,
           now: float, max_skew: float = MAX_SKEW) -> None:
    """Raise ``VerificationError`` unless a signature matches and the timestamp is recent.

    Every listed signature is compared in constant time, and all of them are compared, so the
    answer's timing says nothing about which one (if any) came close.
    """
    if not timestamp:
        raise VerificationError("missing X-Ultravox-Webhook-Timestamp header")
    if not signatures:
        raise VerificationError("missing X-Ultravox-Webhook-Signature header")
    sent_at = parse_timestamp(timestamp)
    header = "X-Ultravox-Webhook-Timestamp"
    if sent_at < now - max_skew:
        raise VerificationError(f"{header} is {now - sent_at:.1f} s old (limit {max_skew:.0f} s)"
                                ": a replayed or long-delayed request")
    if sent_at > now + max_skew:
        raise VerificationError(f"{header} is {sent_at - now:.1f} s in the future (limit "
                                f"{max_skew:.0f} s): check the clocks")
    expected = signature(secret, body, timestamp).encode()
    matched = False
    for candidate in signatures.split(b",")[:MAX_SIGNATURES]:
        matched |= hmac.compare_digest(expected, candidate.strip().lower())
    if not matched:
        raise VerificationError("no X-Ultravox-Webhook-Signature matches: wrong secret, or the "
                                "body or timestamp was altered")


def parse_event(body: bytes) -> tuple[str, str | None]:
    """``(event, callId)`` from a verified body; 400 if it is not the documented shape."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise HttpError(400, "the webhook body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise HttpError(400, 'the webhook body must be an object with a string "event"')
    call = data.get("call")
    call_id = call.get("callId") if isinstance(call, dict) else None
    return data["event"], call_id if isinstance(call_id, str) else None


async def webhook(ctx: Context, request: Request) -> Response:
    """``POST /v1/providers/ultravox/webhook``: verify, then poll the named call now."""
    secret = ctx.runtime.config.api.ultravox_webhook_secret
    if secret is None:
        raise HttpError(404, "not found")  # not configured: the route does not exist
    body = await request.body()  # capped at BODY_LIMIT by BodyCap
    try:
        verify(secret.reveal().encode(), body, timestamp=_header(request, TIMESTAMP_HEADER),
               signatures=_header(request, SIGNATURE_HEADER), now=ctx.clock())
    except VerificationError as exc:
        ctx.stats.ultravox_webhooks["rejected"] += 1
        if ctx.refusals.allow():  # anyone can send these: never a log flood
            log.warning("api.ultravox_webhook_rejected", reason=str(exc),
                        suppressed=ctx.refusals.take_suppressed())
        return error_response(401, str(exc), _CHALLENGE)
    event, call_id = parse_event(body)
    if event not in POLL_EVENTS or call_id is None:
        return _ignored(ctx, event, call_id, f"{event} needs no poll" if call_id else
                        "the body names no call.callId")
    if not await ctx.runtime.store.make_due(PROVIDER, call_id, ctx.clock()):
        return _ignored(ctx, event, call_id, "the call is not tracked, or tracking it is done")
    ctx.runtime.scheduler.wake(PROVIDER)
    ctx.stats.ultravox_webhooks["polled"] += 1
    log.info("api.ultravox_webhook", webhook_event=event, provider=PROVIDER, call_id=call_id)
    return json_response(200, {"action": "poll", "event": event, "call_id": call_id})


def _header(request: Request, name: str) -> bytes | None:
    """The raw bytes of header ``name`` (the signature covers bytes, not decoded text)."""
    values = request.headers.getlist(name)
    return values[-1].encode("latin-1") if values else None


def _ignored(ctx: Context, event: str, call_id: str | None, reason: str) -> Response:
    ctx.stats.ultravox_webhooks["ignored"] += 1
    log.info("api.ultravox_webhook_ignored", webhook_event=event, provider=PROVIDER,
             call_id=call_id[:80] if call_id else None, reason=reason)
    return json_response(202, {"action": "ignored", "event": event, "reason": reason})
